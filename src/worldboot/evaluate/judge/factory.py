"""The judge a config names."""

from __future__ import annotations

import os

from worldboot.evaluate.judge.base import Judge, JudgeConfig
from worldboot.evaluate.judge.openai_judge import OpenAIJudge
from worldboot.evaluate.judge.world import WorldJudge


def make_judge(cfg: JudgeConfig, cache_path: str | os.PathLike[str]) -> Judge | None:
    """The judge ``cfg.type`` names, or None for ``none``."""
    if cfg.type == "none":
        return None
    if cfg.type == "world":
        return WorldJudge()
    return OpenAIJudge(cfg, os.path.expanduser(cfg.cache) if cfg.cache else cache_path)
