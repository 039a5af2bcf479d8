"""The dynamics model (CDM) writes an action for each key-frame pair and scores it.

For a pair (o_s, o_t) the CDM generates a = argmax p(a | o_s, o_t) (greedy, or sampled),
and the log-likelihood log p(a | o_s, o_t) of that action is its score, as a sum over the
action's tokens and as a per-token mean (paper, Section 3.2 and Appendix G).

Output is append-only JSONL, flushed and synced after each batch, so a killed run resumes:
ids already written (in any shard file of the output folder) are skipped, and a truncated
last line left by a kill is cut off before appending. Batches are a fixed partition of the
shard's pairs and each batch has its own random seed, so a resumed run writes exactly what
one clean run writes, sampling included.

Work is split across processes with ``shard=(i, n)``: pair ids are hashed into ``n`` shards,
and each shard writes its own file, ``annotated.shard-<i>-of-<n>.jsonl``.

(Just over 400 lines, and :func:`annotate_pairs` just over 80 with its docstring: the run's
resume checks and the one ``take`` closure that both engines write through belong with it;
split apart, they would pass the run's state between modules.)
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from worldboot.bounds import seed_field
from worldboot.data.schema import Problems
from worldboot.errors import ConfigError, DataError, resolve_path
from worldboot.images import open_image
from worldboot.mining.pairs import read_pairs
from worldboot.progress import progress_bar
from worldboot.ray_data import RaySettings, run_jobs
from worldboot.run_guards import claim_folder, refuse_other_settings, run_meta
from worldboot.runs import (
    RunDir,
    append_jsonl,
    done_ids,
    make_folder,
    parse_shard,
    read_jsonl,
    repair_tail,
    shard_items,
    write_atomic,
)


@dataclass
class AnnotateConfig:
    """Settings of ``worldboot annotate``.

    Attributes:
        batch_size: Pairs per generation batch (also the unit of resumption).
        max_new_tokens: Longest action in tokens.
        sample: Sample actions instead of greedy decoding.
        temperature: Sampling temperature (with ``sample``).
        seed: Base seed of sampling; batch ``b`` uses ``seed + b``.
        shard: ``"i/n"``: annotate only shard ``i`` of ``n`` (0-based); None for all, or
            the process's rank when launched by ``accelerate launch`` with several processes.
        strict: Stop at the first malformed pairs line or unreadable image.
        root: Folder every image path of the pairs file must stay under (relative paths are
            read from the pairs file's folder); None: that folder, where ``worldboot
            keyframes`` writes its frames. A path outside it is skipped and counted.
        engine: ``local`` (this process) or ``ray`` (Ray Data actors, one CDM each; the same
            batches, seeds and output as the local run).
        ray: The Ray cluster and actor pool (with ``engine: ray``).
    """

    batch_size: int = 8
    max_new_tokens: int = 24
    sample: bool = False
    temperature: float = 1.0
    seed: int = seed_field(0)
    shard: str | None = None
    strict: bool = False
    root: str | None = None
    engine: Literal["local", "ray"] = "local"
    ray: RaySettings = field(default_factory=RaySettings)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that make no sense."""
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.sample and self.temperature <= 0:
            raise ConfigError(f"temperature must be positive when sampling, got {self.temperature}")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be local or ray, got {self.engine!r}")
        self.ray.validate()

    @property
    def decoding(self) -> str:
        """How actions were decoded, recorded in each row."""
        return f"sample(T={self.temperature:g}, seed={self.seed})" if self.sample else "greedy"


@dataclass
class AnnotateSummary:
    """What an annotate run did.

    Attributes:
        pairs: Valid pairs in the input.
        shard_pairs: Of those, the ones in this shard.
        done_before: Of those, already annotated by an earlier run.
        annotated: Rows written by this run.
        problems: Malformed lines and unreadable images (see the problems report).
        empty_actions: Rows whose generated action is empty.
        output: This shard's JSONL file.
    """

    pairs: int = 0
    shard_pairs: int = 0
    done_before: int = 0
    annotated: int = 0
    problems: int = 0
    empty_actions: int = 0
    output: str = ""




def output_name(shard: tuple[int, int] | None, stem: str = "annotated") -> str:
    """File name of a shard's output (or problems report)."""
    if shard is None:
        return f"{stem}.jsonl"
    i, n = shard
    return f"{stem}.shard-{i}-of-{n}.jsonl"


class _CodeCache:
    """VQ codes of recently seen images: consecutive pairs share a key-frame (the target of
    one is the source of the next), so each image is encoded about once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


def _batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    for b, start in enumerate(range(0, len(rows), size)):
        yield b, list(rows[start : start + size])


def _rel(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path


def _check_resumable(out: Path, cfg: AnnotateConfig, model_dir: str | None) -> None:
    """Refuse to add to rows made by another CDM or with other decoding settings: the rows
    done would be kept as they are, under a config.yaml that says otherwise.

    Raises:
        ConfigError: Naming what differs.
    """
    keys = ["max_new_tokens", "sample"] + (["temperature", "seed", "batch_size"] if cfg.sample else [])
    refuse_other_settings(out, cfg, keys, "annotated rows")
    held = run_meta(out).get("cdm")
    if isinstance(held, str) and held and model_dir and Path(held) != resolve_path(model_dir):
        raise ConfigError(f"{out} holds rows annotated by the CDM {held}, not {model_dir}: "
                          "use another --out (or delete the folder) to start afresh")


def annotate_pairs(
    pairs_path: str | os.PathLike[str],
    backbone: Any,
    out_dir: str | os.PathLike[str],
    cfg: AnnotateConfig | None = None,
    shard: tuple[int, int] | None = None,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
    model_dir: str | None = None,
) -> AnnotateSummary:
    """Annotate every pair of ``pairs_path`` (of this shard) that ``out_dir`` does not hold yet.

    Args:
        pairs_path: ``pairs.jsonl`` from ``worldboot keyframes``.
        backbone: The CDM, a :class:`~worldboot.models.backbone.Backbone`.
        out_dir: Output folder; ``annotated*.jsonl`` there count as done.
        cfg: Settings.
        shard: ``(i, n)``; overrides ``cfg.shard``.
        on_batch: Called with ``(batch index, rows written)`` after each batch is on disk (local engine; Ray batches finish in any order).
        progress: Show a progress bar.
        model_dir: The CDM's folder: recorded in the run's log and meta.json, and checked on a resume.

    Returns:
        Counts and the output file.
    """
    cfg = cfg or AnnotateConfig()
    cfg.validate()
    if shard is None and cfg.shard is not None:
        shard = parse_shard(cfg.shard)
    out = claim_folder(out_dir, "annotate")
    make_folder(out)
    problems = Problems(strict=cfg.strict)
    rows = read_pairs(pairs_path, problems, cfg.root)
    summary = AnnotateSummary(pairs=len(rows))
    mine = rows if shard is None else shard_items(rows, shard[0], shard[1], key=lambda r: r["id"])
    summary.shard_pairs = len(mine)
    out_file = out / output_name(shard)
    summary.output = str(out_file)
    repair_tail(out_file)
    done = done_ids(sorted(out.glob("annotated*.jsonl")))
    if done:
        _check_resumable(out, cfg, model_dir)
    summary.done_before = sum(r["id"] in done for r in mine)
    # Shards share the folder: config.yaml and meta.json hold the last shard started; each
    # shard's start and end are in log.txt.
    run = RunDir(out, cfg, "annotate", claimed=True)
    run.meta["cdm"] = str(resolve_path(model_dir)) if model_dir else None
    # Where the images were checked to lie: `worldboot select` checks them against it again.
    run.meta["data_root"] = str(resolve_path(cfg.root) if cfg.root else resolve_path(pairs_path).parent)
    with run as rd:
        # After meta.json: another shard that starts now finds a run here, not a stray file.
        out_file.touch()  # a shard with nothing to do still leaves its (empty) output
        rd.log(
            f"annotate {pairs_path} with {model_dir or 'a backbone'}: shard {shard}, {len(mine)} pairs, "
            f"{summary.done_before} already done"
        )
        bar = progress_bar("annotate", progress)
        with bar:
            job = bar.add_task("pairs", total=len(mine), completed=summary.done_before)

            def take(rows: list[dict[str, Any]], found: list[list[Any]]) -> None:
                # One write per batch, flushed to disk: a kill loses at most this batch.
                append_jsonl(out_file, rows)
                done.update(row["id"] for row in rows)
                summary.annotated += len(rows)
                summary.empty_actions += sum(not row["action"].strip() for row in rows)
                bar.update(job, advance=len(rows))
                # After the rows are on disk: under --strict a problem stops the run here, and
                # the batch's finished rows are kept for the rerun.
                for line, message in found:
                    problems.add(pairs_path, line, message)

            batches = [(b, batch) for b, batch in _batches(mine, cfg.batch_size)
                       if any(r["id"] not in done for r in batch)]
            if cfg.engine == "ray":
                _annotate_on_ray(pairs_path, batches, mine, cfg, out, out_file, done, problems, model_dir, take)
            else:
                cache = _CodeCache(capacity=4 * cfg.batch_size)
                for b, batch in batches:
                    rows, found = annotate_batch(backbone, batch, b, cfg, out, done, cache)
                    take(rows, found)
                    if on_batch is not None:
                        on_batch(b, rows)
        summary.problems = len(problems)
        problems.write(out / output_name(shard, "problems"))
        rd.log(f"wrote {summary.annotated} rows to {out_file}; {summary.problems} problems")
    return summary


def _annotate_on_ray(
    pairs_path: str | os.PathLike[str],
    batches: list[tuple[int, list[dict[str, Any]]]],
    mine: Sequence[dict[str, Any]],
    cfg: AnnotateConfig,
    out: Path,
    out_file: Path,
    done: set[str],
    problems: Problems,
    model_dir: str | None,
    take: Callable[[list[dict[str, Any]], list[list[Any]]], None],
) -> None:
    """Annotate ``batches`` on Ray Data actors (each loads the CDM from ``model_dir``), passing
    each result to ``take``; a batch whose actor was lost is a problem of each of its pairs, and
    the output file is put back in the order of one local run.

    Raises:
        ConfigError: No ``model_dir``.
    """
    if not model_dir:
        raise ConfigError("the ray engine loads the CDM on each actor: give its directory (model_dir)")
    jobs = [{"b": b, "batch": batch, "cfg": asdict(cfg), "out": str(out),
             "done": [r["id"] for r in batch if r["id"] in done]} for b, batch in batches]
    outcome = run_jobs(jobs, load_cdm, annotate_job, {"model_dir": str(model_dir)}, cfg.ray,
                       lambda _job, res: take(res["rows"], res["problems"]))
    for j in outcome.lost:
        for r in j["batch"]:
            problems.add(pairs_path, r["_line"], outcome.reason("annotated"))
    # Rows arrive in any order: back to the order of one local run.
    order = {r["id"]: i for i, r in enumerate(mine)}
    rows_now = sorted((row for _, row in read_jsonl(out_file)), key=lambda r: order.get(r["id"], -1))
    write_atomic(out_file, "".join(json.dumps(r) + "\n" for r in rows_now))


def annotate_batch(
    backbone: Any,
    batch: list[dict[str, Any]],
    b: int,
    cfg: AnnotateConfig,
    out: Path,
    done: set[str],
    cache: _CodeCache | None = None,
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Batch ``b`` of a run: the rows to write (pairs not in ``done``) and the problems found
    (``[line, message]``). The whole batch is encoded and decoded, as a clean run does, so a
    resumed run or a Ray actor writes what one clean local run writes (sampling included:
    batch ``b`` samples with seed ``cfg.seed + b``)."""
    import torch

    from worldboot.models.backbone import SamplingConfig

    cache = cache if cache is not None else _CodeCache(capacity=4 * cfg.batch_size)
    found: list[list[Any]] = []
    ready, images = [], []
    for r in batch:
        try:
            pair_imgs = [cache.get(r[k]) for k in ("source", "target")]
            for k, i in (("source", 0), ("target", 1)):
                if pair_imgs[i] is None:
                    pair_imgs[i] = open_image(r[k])
        except DataError as err:
            found.append([r["_line"], str(err)])
            continue
        ready.append(r)
        images.append(pair_imgs)
    if not ready:
        return [], found
    codes = _encode(backbone, ready, images, cache)
    prompts = [backbone.dynamics_example(s, t) for s, t in codes]
    generator = torch.Generator().manual_seed(cfg.seed + b) if cfg.sample else None
    sampling = SamplingConfig(temperature=cfg.temperature if cfg.sample else 0.0)
    actions = backbone.generate_text(prompts, cfg.max_new_tokens, sampling, generator)
    examples = [backbone.dynamics_example(s, t, a) for (s, t), a in zip(codes, actions, strict=True)]
    scores = backbone.score(examples, batch_size=cfg.batch_size)
    rows = []
    for i, r in enumerate(ready):
        if r["id"] in done:
            continue
        row = {k: v for k, v in r.items() if k != "_line"}
        row["source"], row["target"] = _rel(r["source"], out), _rel(r["target"], out)
        row.update(
            action=actions[i],
            score_sum=float(scores.total[i]),
            score_mean=float(scores.mean[i]),
            n_tokens=int(scores.count[i]),
            decoding=cfg.decoding,
        )
        rows.append(row)
    return rows, found


def load_cdm(model_dir: str) -> Any:
    """A Ray actor's CDM (on its GPU when it reserved one)."""
    import torch

    from worldboot.models import load_backbone

    backbone = load_backbone(model_dir)
    if torch.cuda.is_available():
        backbone.model.to("cuda")
    return backbone


def annotate_job(backbone: Any, job: dict[str, Any]) -> dict[str, Any]:
    """One batch on a Ray actor: :func:`annotate_batch` with the job's settings."""
    from worldboot.config import from_dict

    cfg = from_dict(AnnotateConfig, job["cfg"])
    rows, found = annotate_batch(backbone, job["batch"], job["b"], cfg, Path(job["out"]), set(job["done"]))
    return {"rows": rows, "problems": found}


def _encode(backbone: Any, rows: list[dict[str, Any]], images: list[list[Any]], cache: _CodeCache):
    """``(source codes, target codes)`` per row; ``images`` holds codes (from the cache) or
    PIL images, and only the PIL images are encoded, each path once."""
    from PIL import Image

    new: dict[str, Image.Image] = {}
    for r, pair in zip(rows, images, strict=True):
        for key, img in zip(("source", "target"), pair, strict=True):
            if isinstance(img, Image.Image):
                new.setdefault(r[key], img)
    codes: dict[str, Any] = {}
    if new:
        enc = backbone.encode_images(list(new.values()))
        for path, code in zip(new, enc.codes, strict=True):
            codes[path] = code
            cache.put(path, code)
    out = []
    for r, pair in zip(rows, images, strict=True):
        src, tgt = (
            codes[r[k]] if isinstance(img, Image.Image) else img
            for k, img in zip(("source", "target"), pair, strict=True)
        )
        out.append((src, tgt))
    return out


def summary_dict(summary: AnnotateSummary) -> dict[str, Any]:
    """The summary as plain data."""
    return asdict(summary)
