"""One (model, sample) entry of an evaluation, which samples are evaluated, and the image metrics (L1, CLIP-I, CLIP-T, DINO) computed over entries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldboot.data.schema import Triplet
from worldboot.errors import DataError
from worldboot.evaluate.judge import Verdict
from worldboot.evaluate.metrics import MetricsConfig
from worldboot.evaluate.tables import IMAGE_METRICS
from worldboot.images import open_image
from worldboot.progress import progress_bar, progress_enabled


@dataclass
class Entry:
    """One (model, sample) row of ``results.jsonl``."""

    model: str
    triplet: Triplet
    image: str | None
    status: str = "ok"
    errors: list[str] = field(default_factory=list)
    values: dict[str, float | None] = field(default_factory=dict)
    verdict: Verdict | None = None
    candidate: int | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        t = self.triplet
        row: dict[str, Any] = {
            "model": self.model,
            "id": t.id,
            "subset": t.subset,
            "action": t.action,
            "source": t.source,
            "target": t.target,
            "prediction": self.image,
            # ok: nothing went wrong; missing: no prediction; error: something was not scored.
            "status": "error" if self.status == "ok" and self.errors else self.status,
            "errors": self.errors,
        }
        for m in IMAGE_METRICS:
            row[m.key] = self.values.get(m.key)
        if self.verdict is not None:
            row["judge"] = self.verdict.to_json()
        if self.candidate is not None:
            row["candidate"] = self.candidate
        if self.candidates:
            row["candidates"] = self.candidates
        return row


class EvalProgress:
    """A rich progress bar on stderr (silent when ``enabled`` is False)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> EvalProgress:
        if progress_enabled(self.enabled):
            self._progress = progress_bar(None, transient=True)
            self._progress.__enter__()
        return self

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if self._progress is None:
            return lambda n: None
        tid = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(tid, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _compute_l1(entries: Sequence[Entry], cfg: MetricsConfig, advance: Callable[[int], None]) -> None:
    from worldboot.evaluate.metrics import l1_pixels

    targets: dict[str, np.ndarray | None] = {}
    for e in entries:
        advance(1)
        if e.image is None or e.triplet.target is None:
            continue
        tpath = e.triplet.target
        if tpath not in targets:
            try:
                targets[tpath] = l1_pixels(open_image(tpath), cfg.l1_size, cfg.l1_crop)
            except DataError as err:
                targets[tpath] = None
                e.errors.append(f"target: {err}")
        if targets[tpath] is None:
            continue
        try:
            pred = l1_pixels(open_image(e.image), cfg.l1_size, cfg.l1_crop)
        except DataError as err:
            e.errors.append(str(err))
            continue
        e.values["l1"] = float(np.abs(pred - targets[tpath]).mean())


def _embed_all(paths: Sequence[str], embed: Callable, batch: int, advance: Callable[[int], None]) -> dict[str, Any]:
    """Embeddings of each readable image path (unreadable ones are left out)."""
    out: dict[str, Any] = {}
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        ok, imgs = [], []
        for p in chunk:
            try:
                imgs.append(open_image(p))
                ok.append(p)
            except DataError:
                continue
        if imgs:
            for p, vec in zip(ok, embed(imgs), strict=True):
                out[p] = vec
        advance(len(chunk))
    return out


def load_scorers(cfg: MetricsConfig) -> tuple[Any, Any]:
    """The CLIP and DINOv2 scorers the config names (None where none is configured).

    Raises:
        ModelError: When a configured directory is not a loadable model.
    """
    from worldboot.evaluate.metrics import ClipScorer, DinoScorer

    clip = ClipScorer(cfg.clip, cfg.device, cfg.batch_size) if cfg.clip else None
    dino = DinoScorer(cfg.dino, cfg.device, cfg.batch_size) if cfg.dino else None
    return clip, dino


def compute_image_metrics(
    entries: Sequence[Entry],
    cfg: MetricsConfig,
    progress: EvalProgress,
    notes: list[str],
    log: Callable[[str], None],
    scorers: tuple[Any, Any] = (None, None),
) -> None:
    """Fill ``l1``, ``clip_i``, ``clip_t`` and ``dino`` of every entry that has a prediction.

    Args:
        entries: The rows.
        cfg: Which metrics.
        progress: Progress bars.
        notes: Receives a line per skipped metric.
        log: The run's log.
        scorers: ``(clip, dino)`` from :func:`load_scorers` (loaded before any money is spent).
    """
    clip, dino = scorers
    if cfg.l1:
        _compute_l1(entries, cfg, progress.task("L1", len(entries)))
    with_pred = [e for e in entries if e.image is not None]
    if not with_pred:
        return
    needed = list(dict.fromkeys([e.image for e in with_pred] + [e.triplet.target for e in with_pred if e.triplet.target]))
    if clip is not None:
        log(f"CLIP from {cfg.clip}")
        emb = _embed_all(needed, clip.image_embeddings, cfg.batch_size, progress.task("CLIP", len(needed)))

        def text_of(t: Triplet) -> str:
            if cfg.clip_t_text == "caption" and t.meta.get("caption"):
                return str(t.meta["caption"])
            return t.action

        texts = list(dict.fromkeys(text_of(e.triplet) for e in with_pred))
        temb = dict(zip(texts, clip.text_embeddings(texts), strict=True))
        for e in with_pred:
            if e.image not in emb:
                continue
            e.values["clip_t"] = float(emb[e.image] @ temb[text_of(e.triplet)])
            if e.triplet.target and e.triplet.target in emb:
                e.values["clip_i"] = float(emb[e.image] @ emb[e.triplet.target])
    else:
        notes.append("CLIP-I and CLIP-T skipped: no CLIP model configured (--clip DIR or metrics.clip=DIR).")
    if dino is not None:
        log(f"DINO from {cfg.dino}")
        emb = _embed_all(needed, dino.image_embeddings, cfg.batch_size, progress.task("DINO", len(needed)))
        for e in with_pred:
            if e.image in emb and e.triplet.target and e.triplet.target in emb:
                e.values["dino"] = float(emb[e.image] @ emb[e.triplet.target])
    else:
        notes.append("DINO skipped: no DINOv2 model configured (--dino DIR or metrics.dino=DIR).")
    if clip is not None:
        text = "caption (else the action)" if cfg.clip_t_text == "caption" else "action text"
        notes.append(
            f"CLIP-T compares the prediction with the {text}; the paper used a BLIP caption: "
            "not comparable with its Table 4."
        )
