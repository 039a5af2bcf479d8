"""``worldboot generate``'s settings, in a module of their own: :mod:`worldboot.infer.generate`
runs them and :mod:`worldboot.infer.outputs` writes the rows they shape, and neither imports
the other for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from worldboot.errors import ConfigError
from worldboot.infer.predict import PredictConfig
from worldboot.ray_data import RaySettings


@dataclass
class GenerateConfig(PredictConfig):
    """``worldboot generate``: a manifest in, one predicted next observation per row out.

    Attributes:
        manifest: A triplet JSONL manifest, AURORA-BENCH ``test.json`` or any format of
            :mod:`worldboot.data.formats`.
        out: The predictions folder.
        format: The manifest's format (default: guessed).
        root: Folder the manifest's image paths are relative to (default: per format).
        tasks: Keep only these subsets, comma-separated.
        repeats: Independent runs (``repeat-k`` folders, seeds ``seed + k``).
        batch_size: Prompts per forward pass (each with ``best_of`` samples).
        strict: Stop at the first bad manifest row instead of reporting and skipping it.
        engine: ``local`` (this process, or a shard of ``accelerate launch``) or ``ray`` (Ray
            Data actors, each with the world model and verifier; the same batches, seeds and
            files as the local run).
        ray: The Ray cluster and actor pool (with ``engine: ray``).
    """

    manifest: str | None = None
    out: str | None = None
    format: str | None = None
    root: str | None = None
    tasks: str | None = None
    repeats: int = 1
    batch_size: int = 4
    strict: bool = False
    engine: Literal["local", "ray"] = "local"
    ray: RaySettings = field(default_factory=RaySettings)

    def validate(self) -> None:
        super().validate()
        if not self.manifest:
            raise ConfigError("no manifest: pass MANIFEST (config: manifest)")
        if not self.out:
            raise ConfigError("no output folder: pass --out PRED (config: out)")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be local or ray, got {self.engine!r}")
        self.ray.validate()


#: Config keys whose values decide the outputs: a folder made with other values is not resumed.
RESUME_KEYS = ("world", "best_of", "verifier", "sampling", "seed", "repeats")
