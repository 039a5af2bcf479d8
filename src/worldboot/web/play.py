"""Interactive prediction: an uploaded image, an action, N candidates ranked by the dynamics model.

The world model (CWM) samples N next observations from one prefill; the dynamics model (CDM)
scores each candidate by log p(action | source, candidate), the paper's best-of-N verifier. The
user picks one and types the next action: a rollout, step by step. Rollouts live in memory
(bounded: the oldest are dropped), keyed by an unguessable id.

Sampling and ranking are :func:`worldboot.infer.predict.predict` with a
:class:`~worldboot.infer.verify.Verifier`, the same code as ``worldboot generate --best-of N``.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from PIL import Image

from worldboot.errors import DataError
from worldboot.images import to_rgb
from worldboot.study.outputs import IMAGE_FORMATS

#: Uploads larger than this many pixels are refused before decoding (decompression bombs).
MAX_UPLOAD_PIXELS = 40_000_000
#: Side of the thumbnail kept of an upload for display.
DISPLAY_SIDE = 512


def size_text(n: int) -> str:
    """``n`` bytes for a person: ``8 MB``, ``1.5 MB``, ``512 KB`` (to a tenth)."""
    return f"{round(n / 2**20, 1):g} MB" if n >= 2**20 else f"{round(n / 2**10, 1):g} KB"


def read_upload(data: bytes, max_bytes: int) -> Image.Image:
    """Decode an uploaded image, accepting only PNG, JPEG and WebP by content (not by name).

    Raises:
        DataError: For an empty, too large, unreadable or other-format file.
    """
    if not data:
        raise DataError("no image uploaded")
    if len(data) > max_bytes:
        raise DataError(f"the image is larger than {size_text(max_bytes)}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in IMAGE_FORMATS:
                raise DataError(f"{img.format} images are not accepted; upload PNG, JPEG or WebP")
            width, height = img.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise DataError(
                    f"the image has {width}x{height} pixels; at most {MAX_UPLOAD_PIXELS:,} please"
                )
            img.load()  # the pixels stay when the file closes
            return to_rgb(img)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise DataError("the file is not a readable PNG, JPEG or WebP image") from None


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of an image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class PlayCandidate:
    """One sampled next observation.

    Attributes:
        codes: ``[L]`` image codes.
        image: The decoded image.
        score: log p(action | source, candidate) under the verifier (None without one).
    """

    codes: object
    image: Image.Image
    score: float | None


@dataclass
class Step:
    """One step of a rollout: a source, an action and its ranked candidates.

    Attributes:
        source_codes: ``[L]`` codes of the source observation.
        source_image: The source as shown.
        action: The action text.
        candidates: Best first (by verifier score when there is one).
        chosen: Index into ``candidates`` of the one the user continued from.
    """

    source_codes: object
    source_image: Image.Image
    action: str
    candidates: list[PlayCandidate]
    chosen: int | None = None


@dataclass
class Rollout:
    """A sequence of steps started from one upload."""

    id: str
    seed: int
    steps: list[Step] = field(default_factory=list)


class Predictor:
    """A world model, an optional verifier, and the rollouts in progress.

    Args:
        world: The world-model backbone (CWM).
        verifier: The dynamics-model backbone (CDM) that ranks candidates; None keeps the
            sampling order.
        num_samples: Default N.
        sampling: A :class:`~worldboot.models.backbone.SamplingConfig`.
        seed: Seeds each rollout's generator (rollout k uses ``seed + k``).
        max_rollouts: Rollouts kept in memory; the oldest is dropped beyond it.
        max_steps: Steps per rollout.
        max_samples: Largest N a request may ask for.

    A verifier whose image tokenizer differs from the world model's re-encodes the source and
    the decoded candidates with its own (see :mod:`worldboot.infer.verify`).
    """

    def __init__(
        self,
        world,
        verifier=None,
        num_samples: int = 4,
        sampling=None,
        seed: int = 0,
        max_rollouts: int = 32,
        max_steps: int = 16,
        max_samples: int = 16,
    ) -> None:
        from worldboot.infer.verify import Verifier
        from worldboot.models.backbone import SamplingConfig

        self.world = world
        self.verifier = verifier
        self._verifier = Verifier(verifier, world) if verifier is not None else None
        self.num_samples = num_samples
        self.sampling = sampling or SamplingConfig()
        self.seed = seed
        self.max_rollouts = max_rollouts
        self.max_steps = max_steps
        self.max_samples = max_samples
        self._rollouts: OrderedDict[str, Rollout] = OrderedDict()
        self._count = 0
        # Generation mutates the model's state (eval mode, KV caches): one request at a time.
        self._lock = threading.Lock()

    def get(self, rollout_id: str) -> Rollout | None:
        """A rollout in progress, or None."""
        with self._lock:
            return self._rollouts.get(rollout_id)

    def _candidates(
        self, rollout: Rollout, source_codes, source_image: Image.Image, action: str, n: int
    ) -> list[PlayCandidate]:
        import torch

        from worldboot.infer.predict import make_generator, predict

        with torch.no_grad():
            generator = make_generator(rollout.seed + len(rollout.steps), self.world.device)
            pred = predict(
                self.world, [source_codes], [action], n, self.sampling, [generator], self._verifier, [source_image]
            )[0]
        scores = pred.scores.total.tolist() if pred.scores is not None else [None] * n
        cands = [PlayCandidate(pred.codes[i].clone(), pred.images[i], scores[i]) for i in range(n)]
        if self.verifier is not None:
            cands.sort(key=lambda c: c.score, reverse=True)
        return cands

    def _check(self, action: str, n: int | None) -> tuple[str, int]:
        action = " ".join(action.split())
        if not action:
            raise DataError("type an action")
        if len(action) > 500:
            raise DataError("the action is longer than 500 characters")
        n = self.num_samples if n is None else n
        if not 1 <= n <= self.max_samples:
            raise DataError(f"the number of candidates must be between 1 and {self.max_samples}")
        return action, n

    def start(self, image: Image.Image, action: str, n: int | None = None) -> Rollout:
        """Encode an image, sample candidates for the action, and open a rollout."""
        action, n = self._check(action, n)
        with self._lock:
            self._count += 1
            rollout = Rollout(id=secrets.token_urlsafe(16), seed=self.seed + self._count)
            source_codes = self.world.encode_images([image]).codes[0]
            shown = image.copy()
            shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
            rollout.steps.append(
                Step(source_codes, shown, action, self._candidates(rollout, source_codes, image, action, n))
            )
            self._rollouts[rollout.id] = rollout
            while len(self._rollouts) > self.max_rollouts:
                self._rollouts.popitem(last=False)
        return rollout

    def step(self, rollout_id: str, choice: int, action: str, n: int | None = None) -> Rollout:
        """Continue a rollout from candidate ``choice`` of its last step with a new action.

        Raises:
            DataError: For an unknown rollout, a bad choice, or a rollout at its step limit.
        """
        action, n = self._check(action, n)
        with self._lock:
            rollout = self._rollouts.get(rollout_id)
            if rollout is None:
                raise DataError("this rollout has expired; start a new one")
            last = rollout.steps[-1]
            if not 0 <= choice < len(last.candidates):
                raise DataError("choose one of the candidates")
            if len(rollout.steps) >= self.max_steps:
                raise DataError(f"a rollout has at most {self.max_steps} steps; start a new one")
            last.chosen = choice
            picked = last.candidates[choice]
            rollout.steps.append(
                Step(
                    picked.codes,
                    picked.image,
                    action,
                    self._candidates(rollout, picked.codes, picked.image, action, n),
                )
            )
            self._rollouts.move_to_end(rollout_id)
        return rollout
