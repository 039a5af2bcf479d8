"""Multiple-choice spatial reasoning (the paper's SpatialMQA and EmbodiedSpatial-Bench columns).

Each item is ``{"image", "question", "choices": [...], "answer"}`` in a JSONL file (image paths
relative to the file). Every choice is scored as a completion of
``<s> [boi] image [eoi] prompt(question)`` by the backbone; the prediction is the choice with the
highest log-likelihood (greedy, deterministic). Two accuracies are reported, as lm-eval-harness
does: ``accuracy`` from the summed log-likelihood and ``accuracy_norm`` from the mean per token
(which does not favour short choices).

``answer`` may be the index of the right choice, its text, or its letter (``"B"``) when the
choices are not themselves letters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldboot.bounds import bounded
from worldboot.data.schema import Problems, iter_jsonl, resolve_under
from worldboot.errors import ConfigError, DataError, ModelError, unless_loop
from worldboot.images import open_image
from worldboot.runs import RunDir, write_atomic


@dataclass
class SpatialConfig:
    """``worldboot evaluate spatial`` settings.

    Attributes:
        model: The backbone directory (a base model, CDM or CWM).
        files: Multiple-choice JSONL files; each gets its own accuracy.
        out: Report directory.
        prompt: Text after the image; ``{question}`` is replaced.
        choice_prefix: Text before each choice (a space, so the choice starts a new word).
        batch_size: Sequences per forward pass.
        image_batch: Images per VQ encoding pass.
        strict: Stop at the first bad line.
    """

    model: str = ""
    files: list[str] = field(default_factory=list)
    out: str = ""
    prompt: str = " Question: {question} Answer:"
    choice_prefix: str = " "
    batch_size: int = bounded(8, ge=1)
    image_batch: int = bounded(8, ge=1)
    strict: bool = False

    def __post_init__(self) -> None:
        try:
            self.prompt.format(question="q")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"config key 'prompt': the only placeholder is {{question}}, got {self.prompt!r}") from None


@dataclass
class MCItem:
    """One multiple-choice question about an image."""

    image: str
    question: str
    choices: list[str]
    answer: int
    line: int


def _answer_index(answer: Any, choices: Sequence[str]) -> int:
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is neither an index nor a choice")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise ValueError(f"answer index {answer} outside 0..{len(choices) - 1}")
        return answer
    if isinstance(answer, str):
        text = answer.strip()
        if text in choices:
            return choices.index(text)
        if len(text) == 1 and text.isalpha() and 0 <= ord(text.upper()) - ord("A") < len(choices):
            return ord(text.upper()) - ord("A")
    raise ValueError(f"answer {answer!r} is neither an index, a choice nor a choice letter")


def read_mc(path: str | os.PathLike[str], problems: Problems) -> list[MCItem]:
    """Items of a multiple-choice JSONL file; bad lines go to ``problems``.

    Raises:
        DataError: When the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"multiple-choice file not found: {path}"))
    items = []
    for lineno, row in iter_jsonl(path, problems):
        missing = [k for k in ("image", "question", "choices", "answer") if k not in row]
        if missing:
            problems.add(path, lineno, f"missing field: {', '.join(missing)}")
            continue
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            problems.add(path, lineno, "choices must be a list of at least two non-empty strings")
            continue
        choices = [c.strip() for c in choices]
        if len(set(choices)) < len(choices):
            problems.add(path, lineno, "choices must differ (two equal choices cannot both be scored)")
            continue
        if not isinstance(row["image"], str) or not isinstance(row["question"], str):
            problems.add(path, lineno, "image and question must be text")
            continue
        try:
            answer = _answer_index(row["answer"], choices)
            image = str(resolve_under(path.parent, row["image"]))
        except (ValueError, DataError) as err:
            problems.add(path, lineno, str(err))
            continue
        items.append(MCItem(image, str(row["question"]).strip(), choices, answer, lineno))
    return items


def score_items(backbone: Any, items: Sequence[MCItem], cfg: SpatialConfig, problems: Problems,
                source: str = "") -> list[dict[str, Any]]:
    """Score every choice of every item; one result row per item whose image could be read."""
    if not hasattr(backbone, "text_example"):
        raise ModelError(f"backbone {type(backbone).__name__} cannot build image-question sequences (text_example)")
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), cfg.image_batch):
        chunk = items[start : start + cfg.image_batch]
        ok, images = [], []
        for item in chunk:
            try:
                images.append(open_image(item.image))
                ok.append(item)
            except DataError as err:
                problems.add(source or item.image, item.line, str(err))
        if not ok:
            continue
        codes = backbone.encode_images(images).codes
        examples, fitting = [], []
        for item, code in zip(ok, codes, strict=True):
            prompt = cfg.prompt.format(question=item.question)
            try:  # a question or choice too long for the model's positions: the item is left out
                built = [backbone.text_example(code, prompt, cfg.choice_prefix + c) for c in item.choices]
            except DataError as err:
                problems.add(source or item.image, item.line, str(err))
                continue
            examples.extend(built)
            fitting.append(item)
        if not fitting:
            continue
        scores = backbone.score(examples, batch_size=cfg.batch_size)
        pos = 0
        for item in fitting:
            n = len(item.choices)
            total = scores.total[pos : pos + n].tolist()
            mean = scores.mean[pos : pos + n].tolist()
            pos += n
            pred = max(range(n), key=lambda i: (total[i], -i))
            pred_norm = max(range(n), key=lambda i: (mean[i], -i))
            rows.append(
                {
                    "line": item.line,
                    "image": item.image,
                    "question": item.question,
                    "choices": item.choices,
                    "answer": item.answer,
                    "prediction": pred,
                    "prediction_norm": pred_norm,
                    "correct": pred == item.answer,
                    "correct_norm": pred_norm == item.answer,
                    "logprob": total,
                    "logprob_mean": mean,
                }
            )
    return rows


def run_spatial(cfg: SpatialConfig, backbone: Any = None) -> dict[str, Any]:
    """Accuracy per file; writes ``results.jsonl``, ``table.md`` and ``table.json`` into ``cfg.out``.

    Args:
        cfg: The settings.
        backbone: An already loaded backbone (default: ``load_backbone(cfg.model)``).

    Returns:
        ``{"markdown": str, "table": {file: {"accuracy", "accuracy_norm", "scored", "total"}}}``.
    """
    if not cfg.files:
        raise ConfigError("no multiple-choice file given")
    if not cfg.out:
        raise ConfigError("no report directory: pass --out DIR")
    if backbone is None and not cfg.model:
        raise ConfigError("no model: pass --model DIR")
    problems = Problems(cfg.strict)
    # One file given twice (``a.jsonl ./a.jsonl``) is scored once: one table row, one result each.
    files: list[str] = []
    for f in cfg.files:
        if all(os.path.realpath(f) != os.path.realpath(g) for g in files):
            files.append(f)
    # The files first: a mistake in one stops the run before the model loads or --out exists.
    read = {f: read_mc(f, problems) for f in files}
    if backbone is None:
        from worldboot.models import load_backbone

        backbone = load_backbone(cfg.model)
    out = Path(cfg.out)
    table: dict[str, dict[str, Any]] = {}
    lines = []
    with RunDir(out, cfg, "evaluate-spatial") as run:
        for f in files:
            items = read[f]
            rows = score_items(backbone, items, cfg, problems, source=f)
            name = Path(f).stem
            if name in table:
                name = f
            n = len(rows)
            table[name] = {
                "file": f,
                "accuracy": sum(r["correct"] for r in rows) / n if n else None,
                "accuracy_norm": sum(r["correct_norm"] for r in rows) / n if n else None,
                "scored": n,
                "total": len(items),
            }
            lines += [json.dumps({"file": name, **r}) + "\n" for r in rows]
            run.log(f"{f}: {n}/{len(items)} scored, accuracy {table[name]['accuracy']}")
        body = []
        for name, t in table.items():
            acc = "–" if t["accuracy"] is None else f"{100 * t['accuracy']:.1f}"
            accn = "–" if t["accuracy_norm"] is None else f"{100 * t['accuracy_norm']:.1f}"
            body.append(f"| {name} | {acc} | {accn} | {t['scored']}/{t['total']} |")
        markdown = "\n".join(
            ["# Spatial reasoning (multiple choice, greedy by log-likelihood)", "",
             f"Model: `{cfg.model or type(backbone).__name__}`", "",
             "| File | Accuracy (%) | Accuracy, per-token (%) | scored |", "|---|---|---|---|", *body]
        ) + "\n"
        if len(problems):
            problems.write(out / "problems.jsonl")
            markdown += f"\n{len(problems)} input problems skipped; see problems.jsonl.\n"
        write_atomic(out / "results.jsonl", "".join(lines))
        write_atomic(out / "table.md", markdown)
        write_atomic(out / "table.json", json.dumps({"model": cfg.model, "files": table, "problems": len(problems)}, indent=2))
    return {"markdown": markdown, "table": table}
