"""The procedural world's judge: the parser reads the predicted scene, and the world's rules score it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from worldboot.errors import ConfigError, DataError
from worldboot.evaluate.judge.base import JudgeRequest, Usage, Verdict
from worldboot.images import open_image

# -- the procedural world's judge -------------------------------------------------------------


def check_world_bench(bench: str, triplets: Sequence[Any]) -> None:
    """Refuse the world judge on a benchmark with no sample of the procedural world (it would
    fail every sample).

    Raises:
        ConfigError: Naming the benchmark and its first action.
    """
    from worldboot.world.text import parse_action

    if not any("source_scene" in t.meta or parse_action(t.action) is not None for t in triplets):
        raise ConfigError(
            f"--judge world scores only the procedural world's triplets, and no sample of {bench} is one "
            f"(the first action: {triplets[0].action!r}); use --judge openai or --judge none"
        )


class WorldJudge:
    """The procedural world's exact judge: it parses the rendered scenes instead of asking a VLM.

    With the sample at hand it calls ``judge_triplet(triplet, predicted_image)``, which takes the
    true source and target scenes and the structured action from the triplet's ``meta`` (as the
    world's generator writes them); otherwise ``judge(source_image, action, predicted_image)``
    parses the source. Both return ``editing_success``, ``minimal_editing``, ``score`` and
    ``details``. An action or image the world cannot read is a per-sample failure.
    """

    name = "world"

    def __init__(self) -> None:
        from worldboot.world.judge import judge, judge_triplet

        self._judge = judge
        self._judge_triplet = judge_triplet
        self.usage = Usage()

    def _one(self, req: JudgeRequest) -> Verdict:
        try:
            predicted = open_image(req.prediction)
            source = open_image(req.source) if req.triplet is None else None
        except DataError as err:
            return Verdict(error=str(err))
        try:
            if source is None:
                res = self._judge_triplet(req.triplet, predicted)
            else:
                res = self._judge(source, req.action, predicted)
        except (ValueError, KeyError, DataError) as err:
            # The world judge refuses actions or scenes it cannot parse: a per-sample failure.
            return Verdict(error=f"world judge: {type(err).__name__}: {err}"[:500])
        details = getattr(res, "details", None) or {}
        es, me = float(res.editing_success), float(res.minimal_editing)
        score = getattr(res, "score", None)
        return Verdict(
            editing_success=es,
            minimal_editing=me,
            score=float(score) if score is not None else min(es, me),
            details=json.loads(json.dumps(details, default=str)),
        )

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        """Judge every request in order."""
        out = []
        for req in requests:
            out.append(self._one(req))
            if progress:
                progress(1)
        self.usage.requests += len(out)
        self.usage.failures += sum(1 for v in out if not v.ok)
        return out

    def close(self) -> None:
        """Nothing to release."""
