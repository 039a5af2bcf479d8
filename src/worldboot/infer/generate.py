"""Next-observation prediction with the world model (CWM), optionally best-of-N with the CDM.

For each (source, action) of a manifest the world model samples image tokens only, exactly
``L`` of them (:meth:`~worldboot.models.backbone.Backbone.generate_images` prefills the prompt
once and repeats its KV cache N times), which are decoded to a PNG. With a verifier the N
candidates are scored by the dynamics model in one batched forward and the argmax is the
prediction (:mod:`worldboot.infer.verify`).

**Seeds.** Sample ``id`` of repeat ``k`` draws from its own generator seeded with
:func:`sample_seed` ``(seed + k, id)``, so its output does not depend on batching, sharding or
resuming. (Up to float rounding: a batch pads prompts to one length, which moves logits by
~1e-7; a sampled token could flip only when two cumulative probabilities meet that closely.)

**Output** (``PRED``; with ``repeats > 1`` each repeat ``k`` is a folder ``PRED/repeat-k`` of
the same shape, so that evaluation reports mean ± std over runs)::

    predictions.jsonl          one row per sample, in manifest order (see below)
    images/<id>.png            the prediction
    candidates/<id>/<k>.png    every candidate, when there is a verifier or N > 1
    codes/<id>.safetensors     source, candidates [N, L] (and the verifier's codes and scores)
    problems.jsonl             bad manifest rows: {file, line, reason} (at PRED's top)
    config.yaml  meta.json  log.txt

A row: ``{id, subset, action, source, target, image, codes, seed, repeat, sampling, best_of,
world, verifier, verifier_score, verifier_reencoded, candidates: [{image, score, total, mean}],
chosen}``; image paths are relative to the row's folder. ``candidates`` and ``chosen`` appear
when there is a verifier or N > 1; ``score`` is the verifier's log p(action | source,
candidate) by the configured kind (``total`` or ``mean``), None without a verifier.

**Resume and shards.** Rows are appended with a flush per batch after their PNGs and codes are
on disk (atomically), so a killed run resumes where it stopped: ids already in the folder are
skipped and a truncated last line is cut. Shard ``i/n`` (``--shard`` or the processes of
``accelerate launch``) takes the samples whose id hashes to ``i``
(:func:`worldboot.runs.shard_of`) and appends to ``shards/i-of-n.jsonl``; the last shard to finish merges every shard into
``predictions.jsonl`` in manifest order (under a file lock), so a sharded run ends with the
same files as a single one.

The prediction of one batch is :mod:`worldboot.infer.predict`; the files a row points to are
written by :mod:`worldboot.infer.outputs`.

(Just over 400 lines: one run loop with resume, repeats and shards, which share its state.)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from worldboot.config import dump_yaml, read_yaml, to_dict
from worldboot.errors import ConfigError, resolve_path
from worldboot.infer.jobs import load_models_job, predict_batch, predict_job
from worldboot.infer.outputs import merge_rows, row_files
from worldboot.infer.predict import PredictConfig, load_models
from worldboot.infer.verify import Verifier
from worldboot.progress import progress_bar
from worldboot.ray_data import RaySettings, run_jobs
from worldboot.runs import (
    RunDir,
    append_jsonl,
    distributed_shard,
    done_ids,
    file_lock,
    read_jsonl,
    repair_tail,
    shard_items,
    write_atomic,
)


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


# -- manifests ------------------------------------------------------------------------------------




def _line_numbers(path: Path, fmt: str) -> dict[str, int]:
    """Id -> 1-based line of a JSONL manifest (for problems found after loading)."""
    lines: dict[str, int] = {}
    if fmt != "jsonl":
        return lines
    for lineno, row in read_jsonl(path):
        if "id" in row:
            lines.setdefault(str(row["id"]), lineno)
    return lines


def load_samples(cfg: GenerateConfig, problems: Any) -> tuple[list[Any], dict[str, int]]:
    """The manifest's triplets (targets optional, unique ids) and each id's line.

    Images are not opened here: a source that cannot be read is reported when its batch comes.
    """
    from worldboot.data.formats import detect_format, load_any

    path = Path(cfg.manifest)
    fmt = cfg.format or detect_format(path)
    triplets = load_any(
        path, fmt, cfg.root, cfg.tasks, problems, check_images=False, require_target=False
    )
    lines = _line_numbers(path, fmt)
    seen: set[str] = set()
    unique = []
    for t in triplets:
        line = lines.get(t.id) or int(t.meta.get("line") or t.meta.get("entry") or 0)
        lines[t.id] = line
        if t.id in seen:
            problems.add(path, line, f"duplicate id: {t.id}")
            continue
        seen.add(t.id)
        unique.append(t)
    return unique, lines


# -- the run --------------------------------------------------------------------------------------


@dataclass
class GenerateSummary:
    """What a run did."""

    samples: int = 0
    shard_samples: int = 0
    predicted: int = 0
    done_before: int = 0
    problems: int = 0
    merged: bool = False
    out: str = ""
    shard: str = "0/1"
    reencoded: bool = False


def check_resumable(out: Path, cfg: GenerateConfig) -> None:
    """Refuse to add to a folder whose predictions were made with other settings.

    Raises:
        ConfigError: Naming the first key that differs.
    """
    old_file = out / "config.yaml"
    patterns = ("predictions.jsonl", "shards/*.jsonl", "repeat-*/predictions.jsonl", "repeat-*/shards/*.jsonl")
    if not old_file.is_file() or not any(any(out.glob(p)) for p in patterns):
        return
    old, new = read_yaml(old_file), to_dict(cfg)

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix: tree}
        out_: dict[str, Any] = {}
        for k, v in tree.items():
            out_.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return out_

    for key in RESUME_KEYS:
        a, b = flat(old.get(key), key), flat(new.get(key), key)
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                raise ConfigError(
                    f"{out} holds predictions made with {k}={a.get(k)!r}, not {b.get(k)!r}: "
                    "use another --out (or delete the folder) to start afresh"
                )


def run_generate(
    cfg: GenerateConfig,
    shard: tuple[int, int] | None = None,
    world: Any | None = None,
    verifier: Verifier | None = None,
    progress: bool = True,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> GenerateSummary:
    """Predict the next observation of every manifest row (of this shard) not yet in ``cfg.out``.

    Args:
        cfg: Settings (validated here).
        shard: ``(i, n)``; None: the accelerate process's part when launched with several
            processes, else everything.
        world: An already loaded world model (default: ``load_backbone(cfg.world)``).
        verifier: An already loaded verifier (default: loaded from ``cfg.verifier.path`` if set).
        progress: Show a progress bar (``WORLDBOOT_NO_PROGRESS`` turns it off too).
        on_batch: Called with ``(batch index, rows)`` after each batch is on disk (local engine; Ray batches finish in any order).

    Returns:
        Counts; ``merged`` tells whether ``predictions.jsonl`` now holds every shard.

    Raises:
        UserError: Bad settings, a missing manifest or model, a folder made with other
            settings, or (with ``strict``) a bad manifest row.
    """

    from worldboot.data.schema import Problems

    cfg.validate()
    dist = None
    if shard is None:
        dist = distributed_shard()
        shard = (dist[0], dist[1]) if dist else (0, 1)
    index, count = shard
    out = Path(cfg.out)
    check_resumable(out, cfg)
    problems = Problems(strict=cfg.strict)
    samples, lines = load_samples(cfg, problems)
    if index > 0:  # every shard loads the whole manifest; its problems are reported once
        problems.items.clear()
    mine = shard_items(samples, index, count, key=lambda t: t.id)
    folders = [out] if cfg.repeats == 1 else [out / f"repeat-{k}" for k in range(cfg.repeats)]
    summary = GenerateSummary(
        samples=len(samples), shard_samples=len(mine), out=str(out), shard=f"{index}/{count}"
    )
    run_path = out if count == 1 else out / "shards" / f"{index}-of-{count}"
    marker = run_path / "done"  # a finished shard; the merge waits for all of them
    marker.unlink(missing_ok=True)
    order = [t.id for t in samples]
    if count > 1:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.yaml", dump_yaml(cfg))
    else:
        # A single run folds in what earlier sharded runs left unmerged.
        for folder in folders:
            if list((folder / "shards").glob("*-of-*.jsonl")):
                with file_lock(out / ".merge.lock"):
                    merge_rows(folder, order)

    if cfg.engine == "local":  # Ray actors load their own copies
        world, verifier = load_models(cfg, dist[2] if dist else None, world, verifier)
    record = {
        "sampling": dataclasses.asdict(cfg.sampling),
        "best_of": cfg.best_of,
        "world": str(resolve_path(cfg.world)) if cfg.world else None,
        "verifier": str(resolve_path(cfg.verifier.path)) if cfg.verifier.path else None,
        "verifier_score": cfg.verifier.score if cfg.verifier.path else None,
    }
    done = [done_ids(row_files(f)) for f in folders]
    todo = [t for t in mine if any(t.id not in d for d in done)]
    summary.done_before = sum(t.id in d for t in mine for d in done)
    files = [f / "predictions.jsonl" if count == 1 else f / "shards" / f"{index}-of-{count}.jsonl" for f in folders]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(f)
    manifest = Path(cfg.manifest)
    with RunDir(run_path, cfg, "generate") as rd:
        rd.log(
            f"generate {cfg.manifest} with {cfg.world} (best of {cfg.best_of}, verifier {cfg.verifier.path}): "
            f"shard {index}/{count}, {len(mine)} samples, {summary.done_before} predictions already done"
        )
        if cfg.engine == "ray":
            rd.log(f"engine ray: {cfg.ray.actors} actors, {cfg.ray.gpus_per_actor} GPUs each")
        elif verifier is not None and verifier.reencode:
            summary.reencoded = True
            rd.log("the verifier's tokenizer differs from the world model's: candidates are re-encoded")
        bar = progress_bar("generate", progress)
        with bar:
            job = bar.add_task("samples", total=len(mine) * len(folders), completed=summary.done_before)

            def take(rows: list[list[dict[str, Any]]], found: list[Any]) -> list[dict[str, Any]]:
                for sample_id, problem in found:
                    problems.add(manifest, lines.get(sample_id, 0), problem)
                    bar.update(job, advance=sum(sample_id not in d for d in done))
                written: list[dict[str, Any]] = []
                for k, fh in enumerate(files):
                    # The PNGs are in place; one write, flush and fsync per batch: a kill
                    # loses at most this batch, and never leaves a row without its image.
                    append_jsonl(fh, rows[k])
                    done[k].update(r["id"] for r in rows[k])
                    written.extend(rows[k])
                summary.predicted += len(written)
                bar.update(job, advance=len(written))
                return written

            batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
            if cfg.engine == "ray":
                jobs = [{"batch": [t.to_json() for t in batch], "folders": [str(f) for f in folders],
                         "done": [[t.id for t in batch if t.id in d] for d in done], "record": record}
                        for batch in batches]
                outcome = run_jobs(jobs, load_models_job, predict_job, {"cfg": cfg}, cfg.ray,
                                   lambda _job, res: take(res["rows"], res["problems"]))
                for j in outcome.lost:
                    for t in j["batch"]:
                        problems.add(manifest, lines.get(t["id"], 0), outcome.reason("predicted"))
            else:
                for b, batch in enumerate(batches):
                    written = take(*predict_batch(world, verifier, batch, cfg, folders, done, record))
                    if on_batch is not None:
                        on_batch(b, written)
        summary.problems = len(problems)
        problems.write(run_path / "problems.jsonl")
        if count > 1:
            marker.write_text("")
        rd.log(f"predicted {summary.predicted}; {summary.problems} problems")
    if count == 1 and (summary.done_before or cfg.engine == "ray") and summary.predicted:
        # Rows done before (a resumed run, or shards folded in) and rows added now, or rows in
        # the order Ray's actors finished: back to the manifest's order, as one local run writes them.
        for folder in folders:
            merge_rows(folder, order)
    summary.merged = count == 1 or _merge_if_complete(out, folders, count, order)
    return summary


def _merge_if_complete(out: Path, folders: Sequence[Path], count: int, order: Sequence[str]) -> bool:
    """Merge the shards' rows and problems once every shard of ``count`` has finished."""
    with file_lock(out / ".merge.lock"):
        shard_dirs = [out / "shards" / f"{i}-of-{count}" for i in range(count)]
        if not all((d / "done").is_file() for d in shard_dirs):
            return False
        for folder in folders:
            merge_rows(folder, order)
        lines: list[str] = []
        for d in shard_dirs:
            f = d / "problems.jsonl"
            if f.is_file():
                lines.extend(ln for ln in f.read_text().splitlines(keepends=True) if ln not in lines)
                f.unlink()
        write_atomic(out / "problems.jsonl", "".join(lines))
        metas = [json.loads((d / "meta.json").read_text()) for d in shard_dirs if (d / "meta.json").is_file()]
        failed = [m["status"] for m in metas if m.get("status") != "ok"]
        meta = {
            "stage": "generate",
            "status": failed[0] if failed else "ok",
            "end_time": max((m.get("end_time") or "" for m in metas), default=None),
            "shards": count,
            "shard_meta": metas,
        }
        write_atomic(out / "meta.json", json.dumps(meta, indent=2))
        for d in shard_dirs:
            (d / "done").unlink(missing_ok=True)
    return True
