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

The settings are :class:`~worldboot.infer.config.GenerateConfig` (imported here too, for callers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldboot.config import dump_yaml
from worldboot.errors import resolve_path
from worldboot.infer.config import RESUME_KEYS, GenerateConfig
from worldboot.infer.jobs import load_models_job, predict_batch, predict_job
from worldboot.infer.outputs import merge_if_complete, merge_rows, row_files
from worldboot.infer.predict import load_models
from worldboot.infer.verify import Verifier
from worldboot.progress import progress_bar
from worldboot.ray_data import run_jobs
from worldboot.run_guards import claim_folder, held_stage, refuse_other_settings
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
    patterns = ("predictions.jsonl", "shards/*.jsonl", "repeat-*/predictions.jsonl", "repeat-*/shards/*.jsonl")
    if any(any(out.glob(p)) for p in patterns):
        refuse_other_settings(out, cfg, RESUME_KEYS, "predictions")


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
    cfg.validate()
    claim_folder(cfg.out, "generate")
    run = _plan(cfg, shard)
    summary = GenerateSummary(samples=len(run.samples), shard_samples=len(run.mine), out=str(run.out),
                              shard=f"{run.index}/{run.count}")
    _prepare_folders(run)
    if cfg.engine == "local":  # Ray actors load their own copies
        world, verifier = load_models(cfg, run.dist[2] if run.dist else None, world, verifier)
    record = _row_record(cfg)
    todo, summary.done_before = _pending(run)
    with RunDir(run.run_path, cfg, "generate", claimed=True) as rd:
        rd.log(
            f"generate {cfg.manifest} with {cfg.world} (best of {cfg.best_of}, verifier {cfg.verifier.path}): "
            f"shard {run.index}/{run.count}, {len(run.mine)} samples, {summary.done_before} predictions already done"
        )
        if cfg.engine == "ray":
            rd.log(f"engine ray: {cfg.ray.actors} actors, {cfg.ray.gpus_per_actor} GPUs each")
        elif verifier is not None and verifier.reencode:
            summary.reencoded = True
            rd.log("the verifier's tokenizer differs from the world model's: candidates are re-encoded")
        _predict_all(run, todo, world, verifier, record, summary, progress, on_batch)
        summary.problems = len(run.problems)
        run.problems.write(run.run_path / "problems.jsonl")
        if run.count > 1:
            (run.run_path / "done").write_text("")  # this shard is finished; the merge waits for all
        rd.log(f"predicted {summary.predicted}; {summary.problems} problems")
    if run.count == 1 and (summary.done_before or cfg.engine == "ray") and summary.predicted:
        # Rows done before (a resumed run, or shards folded in) and rows added now, or rows in
        # the order Ray's actors finished: back to the manifest's order, as one local run writes them.
        for folder in run.folders:
            merge_rows(folder, run.order)
    summary.merged = run.count == 1 or merge_if_complete(run.out, run.folders, run.count, run.order)
    return summary


# -- the run's steps ------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the steps of one run (or shard) share: its part of the manifest and its files.

    ``dist`` is the accelerate process's ``(index, count, device)`` when it chose the shard;
    ``done`` (per repeat, the ids already predicted) and ``files`` (per repeat, the row file
    this shard appends to) are filled by :func:`_pending`.
    """

    cfg: GenerateConfig
    index: int
    count: int
    dist: tuple[int, int, Any] | None
    problems: Any
    samples: list[Any]
    lines: dict[str, int]
    mine: list[Any]
    folders: list[Path]
    done: list[set[str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def run_path(self) -> Path:
        """The folder of this run's log, meta and problems (a shard's own under ``shards/``)."""
        return self.out if self.count == 1 else self.out / "shards" / f"{self.index}-of-{self.count}"

    @property
    def order(self) -> list[str]:
        """The manifest's ids, in its order (the order of ``predictions.jsonl``)."""
        return [t.id for t in self.samples]


def _plan(cfg: GenerateConfig, shard: tuple[int, int] | None) -> _Run:
    """Choose the shard, refuse a folder made with other settings, load the manifest and take
    this shard's samples (every shard loads it all; its problems are reported by shard 0)."""
    from worldboot.data.schema import Problems

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
    return _Run(cfg, index, count, dist, problems, samples, lines, mine, folders)


def _prepare_folders(run: _Run) -> None:
    """Clear this shard's ``done`` marker; a sharded run writes its config at the top, a single
    run folds in what earlier sharded runs left unmerged."""
    (run.run_path / "done").unlink(missing_ok=True)
    if run.count > 1:
        run.out.mkdir(parents=True, exist_ok=True)
        if held_stage(run.out) is None:  # first: the other shards find a run of generate here
            write_atomic(run.out / "meta.json", json.dumps({"stage": "generate", "shards": run.count}))
        write_atomic(run.out / "config.yaml", dump_yaml(run.cfg))
        return
    for folder in run.folders:
        if list((folder / "shards").glob("*-of-*.jsonl")):
            with file_lock(run.out / ".merge.lock"):
                merge_rows(folder, run.order)


def _row_record(cfg: GenerateConfig) -> dict[str, Any]:
    """The fields every row of the run carries: its sampling, N and models."""
    return {
        "sampling": dataclasses.asdict(cfg.sampling),
        "best_of": cfg.best_of,
        "world": str(resolve_path(cfg.world)) if cfg.world else None,
        "verifier": str(resolve_path(cfg.verifier.path)) if cfg.verifier.path else None,
        "verifier_score": cfg.verifier.score if cfg.verifier.path else None,
    }


def _pending(run: _Run) -> tuple[list[Any], int]:
    """The samples of this shard that some repeat lacks, and the number of predictions already
    done; fills ``run.done`` and ``run.files`` and cuts a truncated last line of each row file."""
    run.done = [done_ids(row_files(f)) for f in run.folders]
    todo = [t for t in run.mine if any(t.id not in d for d in run.done)]
    done_before = sum(t.id in d for t in run.mine for d in run.done)
    shard_file = Path("shards") / f"{run.index}-of-{run.count}.jsonl"
    run.files = [f / ("predictions.jsonl" if run.count == 1 else shard_file) for f in run.folders]
    for f in run.files:
        f.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(f)
    return todo, done_before


def _predict_all(
    run: _Run,
    todo: list[Any],
    world: Any,
    verifier: Verifier | None,
    record: dict[str, Any],
    summary: GenerateSummary,
    progress: bool,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None,
) -> None:
    """Predict ``todo`` batch by batch (here, or on Ray's actors), appending each batch's rows
    and problems as it comes, under a progress bar."""
    cfg, manifest = run.cfg, Path(run.cfg.manifest)
    bar = progress_bar("generate", progress)
    with bar:
        job = bar.add_task("samples", total=len(run.mine) * len(run.folders), completed=summary.done_before)

        def take(rows: list[list[dict[str, Any]]], found: list[Any]) -> list[dict[str, Any]]:
            written: list[dict[str, Any]] = []
            for k, fh in enumerate(run.files):
                # The PNGs are in place; one write, flush and fsync per batch: a kill
                # loses at most this batch, and never leaves a row without its image.
                append_jsonl(fh, rows[k])
                run.done[k].update(r["id"] for r in rows[k])
                written.extend(rows[k])
            summary.predicted += len(written)
            bar.update(job, advance=len(written))
            # After the rows are on disk: under --strict a problem stops the run here, and the
            # batch's finished predictions are kept for the rerun.
            for sample_id, problem in found:
                run.problems.add(manifest, run.lines.get(sample_id, 0), problem)
                bar.update(job, advance=sum(sample_id not in d for d in run.done))
            return written

        batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
        if cfg.engine == "ray":
            _predict_on_ray(run, batches, record, take)
            return
        for b, batch in enumerate(batches):
            written = take(*predict_batch(world, verifier, batch, cfg, run.folders, run.done, record))
            if on_batch is not None:
                on_batch(b, written)


def _predict_on_ray(
    run: _Run,
    batches: list[list[Any]],
    record: dict[str, Any],
    take: Callable[[list[list[dict[str, Any]]], list[Any]], Any],
) -> None:
    """Predict ``batches`` on Ray Data actors, passing each result to ``take`` as it comes; a
    batch whose actor was lost is a problem of each of its samples."""
    jobs = [{"batch": [t.to_json() for t in batch], "folders": [str(f) for f in run.folders],
             "done": [[t.id for t in batch if t.id in d] for d in run.done], "record": record}
            for batch in batches]
    outcome = run_jobs(jobs, load_models_job, predict_job, {"cfg": run.cfg}, run.cfg.ray,
                       lambda _job, res: take(res["rows"], res["problems"]))
    manifest = Path(run.cfg.manifest)
    for j in outcome.lost:
        for t in j["batch"]:
            run.problems.add(manifest, run.lines.get(t["id"], 0), outcome.reason("predicted"))
