"""The smoke preset of `worldboot demo`, end to end: every artefact of the report, and a CDM that
beats its untrained base on the paper's Table 1 action metrics and on the world's action accuracy
(the share of an action's parts it names right)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from worldboot.cli import main
from worldboot.demo import CEILING, GREEDY, REWARD_MODELS, WORLD_MODELS

# The first test to run builds the demo (and, on a fresh machine, the world base) in its fixture.
pytestmark = pytest.mark.timeout(1800)
#: The smoke preset, with a few steps of the reward optimisations the preset leaves out (the paper
#: preset's "CWM + GRPO" and "CWM + DPO" rows), so that their stages, rows, claims and example
#: columns run here too.
DEMO = ["demo", "--preset", "smoke", *(f"{row}.{word}" for row in ("rl", "dpo") for word in (
    "enabled=true", "max_steps=2", "batch_size=2", "micro_batch_size=2", "group_size=2"))]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One smoke demo for every test of this module: its folder and what it printed.

    On a machine without the cached world base, it builds it first (about 4 minutes on 2 idle
    cores)."""
    out = tmp_path_factory.mktemp("e2e") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*DEMO, "--out", str(out)]) == 0
    return out, printed.getvalue()


def _report(out) -> str:
    return (out / "report.md").read_text()


def _judged(out) -> dict:
    return json.loads((out / "predictions" / "judged.json").read_text())


def _cdm(out) -> tuple[dict, dict]:
    cdm = json.loads((out / "stages.json").read_text())["cdm"]["result"]
    return cdm["Chameleon ZS (base)"], cdm["CDM"]


def test_every_artefact_is_written(demo_run):
    out, printed = demo_run
    for name in [
        "report.md", "report.html", "config.yaml", "meta.json", "stages.json",
        "figures/figure2_preferences.png", "figures/figure3_weights.png", "figures/figure7_best_of_k.png",
        "figures/examples.png",
        "probe/preferences.jsonl", "mining/keyframes/pairs.jsonl",
        "mining/synthetic/synthetic.jsonl", "mining/synthetic/stats.md", "predictions/judged.json",
    ]:
        assert (out / name).is_file(), name
    for run in ("cdm", "cwm/cwm", "cwm/c-ft", "cwm/cwm-w-o-synthetic", "cwm/cwm-w-o-weighted-loss", "cwm/cwm--grpo",
                "cwm/cwm--dpo"):
        assert (out / run / "merged" / "model.safetensors").is_file() or (
            out / run / "adapter" / "adapter_model.safetensors").is_file(), run
    assert "report:" in printed


def test_report_has_every_table_figure_and_the_claims(demo_run):
    out, _ = demo_run
    report = _report(out)
    for heading in ("Table 1", "Table 2", "Table 3", "Table 5", "Figure 2", "Figure 3", "Figure 7",
                    "claims held", "Examples", "peak memory (MB)", "action choice", "reads the change",
                    "ceiling", "Wilcoxon", "; p = ", f"C-FT{GREEDY}", "averaged over each model's"):
        assert heading in report, heading
    html = (out / "report.html").read_text()
    assert "<table>" in html and "figure7_best_of_k.png" in html
    state = json.loads((out / "stages.json").read_text())
    assert all(s["seconds"] >= 0 and s["peak_mb"] > 0 for s in state.values()), state


def test_the_benchmark_reads_the_runs_headline_figures(demo_run):
    """``benchmarks/bench_demo.py`` prints these against the targets of issue 36."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "bench_demo.py"
    spec = importlib.util.spec_from_file_location("bench_demo", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, _ = demo_run
    got = bench.headline(out)
    claims = json.loads((out / "stages.json").read_text())["report"]["result"]["claims"]
    assert got["claims"] == len(claims) and 0 <= got["claims held"] <= got["claims"]
    assert 0 < got["averaged claims"] < got["claims"]  # the world models' claims with a test
    assert 0.0 <= got["CDM choice of five"] <= 1.0 and 0.0 <= got["best world model score"] <= 10.0


def test_mined_pairs_are_scenes_and_their_label_precision_is_reported(demo_run):
    """The world's clips are cuts between still scenes, so every key-frame shows a scene; the
    report states per family how many mined labels the clips' truth confirms."""
    out, _ = demo_run
    mine = json.loads((out / "stages.json").read_text())["mine"]["result"]
    selected = mine["label_precision"]["selected"]
    assert selected["all"]["pairs"] == mine["selected"] == sum(v["pairs"] for k, v in selected.items() if k != "all")
    assert selected["all"]["spans"].get("mid-action", 0) == 0
    assert selected["all"]["spans"]["one action"] >= 0.9 * mine["selected"]
    assert 0.0 <= selected["all"]["precision"] <= 1.0
    assert mine["label_precision"]["annotated"]["all"]["pairs"] == mine["pairs"]
    assert "Label precision" in _report(out)


def test_cdm_beats_its_base_on_table_1(demo_run):
    out, _ = demo_run
    base, tuned = _cdm(out)
    assert tuned["bertscore"] > base["bertscore"] and tuned["rougeL"] > base["rougeL"], (base, tuned)
    assert 0.0 <= tuned["action_accuracy"] <= 1.0
    # Action accuracy, part by part (family, kind, object, ...): the base writes no action the
    # world's parser reads; the smoke CDM gets some parts right (measured 0.13-0.20 on the
    # smoke base; exact actions need a CDM that reads the change: docs/log.md).
    assert tuned["slot_accuracy"] > base["slot_accuracy"] + 0.03, (base, tuned)
    # The multiple-choice test of Table 1 ran on both models (1 of 5 actions of the same scene).
    assert all(0.0 <= m["choice_accuracy"] <= 1.0 for m in (base, tuned))
    # The claims' paired tests read the CDM stage's per-sample results, one per test triplet.
    n = len(_judged(out)["Copy"])
    for m in (base, tuned):
        per = m["per_sample"]
        assert len(per["ids"]) == len(per["slot"]) == len(per["choice"]) == n


def test_world_models_sampled_greedy_and_against_the_ceiling(demo_run):
    out, _ = demo_run
    judged = _judged(out)
    assert all(r["es"][0] == 0.0 for r in judged["Copy"])  # the world judge gives Copy no success
    for name in WORLD_MODELS:  # each world model sampled (best-of-8) and decoded greedily
        assert len(judged[name][0]["score"]) == 8 and len(judged[name + GREEDY][0]["score"]) == 1, name
    first = judged["CWM"][0]["id"]  # the CDM's pick and the candidates, as `worldboot generate` writes them
    assert (out / "predictions" / "cwm" / "images" / f"{first}.png").is_file()
    assert (out / "predictions" / "cwm" / "candidates" / first / "7.png").is_file()
    # `worldboot evaluate` judged them: its own table beside the report's
    assert "CWM +Best-of-8" in (out / "predictions" / "evaluate" / "table.md").read_text()
    # The tokenizer's ceiling: the true targets' own tokens, decoded and judged. The world base's
    # tokenizer is exact, so this is near the judge's best score (9.67 measured on the smoke base).
    ceiling = [r["score"][0] for r in judged[CEILING]]
    assert len(ceiling) == len(judged["Copy"]) and sum(ceiling) / len(ceiling) >= 9.5


def test_c_ft_keeps_the_scene_and_edits_more_than_copy(demo_run):
    """C-FT has learnt the task's form: decoded greedily it keeps the source scene (minimal
    editing measured 9.11 of 10), and sampled it makes edits the judge credits where Copy makes
    none (editing success > 0 on 6 of 30 test triplets, measured). ME >= 8 at temperature 1
    would need several times the smoke preset's world-model steps, more than the CI's 15
    minutes leave (docs/log.md)."""
    out, _ = demo_run
    judged = _judged(out)
    greedy_me = [r["me"][0] for r in judged["C-FT" + GREEDY]]
    assert sum(greedy_me) / len(greedy_me) >= 8.0, greedy_me
    sampled_es = [r["es"][0] for r in judged["C-FT"]]
    copy_es = [r["es"][0] for r in judged["Copy"]]
    assert sum(sampled_es) > sum(copy_es) == 0.0, sampled_es


def test_the_cdm_picks_the_true_action_among_five_more_often_than_its_base(demo_run):
    """Issue 36's CI assertion: the smoke CDM (its 500 labelled triplets and 4000 recognition
    samples, 600 steps) beats its untrained base on the choice of the true action among five at
    p < 0.05 (exact McNemar, the same statistic giving the direction), on 400 fresh triplets of a
    seed that neither the test (1000) nor the validation triplets (5000) use. The 30 test
    triplets are too few to settle it. Measured: 0.315 against 0.205 on 400 validation triplets."""
    from worldboot.demo.actions import choice_hits
    from worldboot.models import load_backbone
    from worldboot.stats import mcnemar
    from worldboot.world.gen import generate_triplets

    out, _ = demo_run
    fresh = generate_triplets(out.parent / "fresh", 80, seed=7000)
    base_dir = json.loads((out / "stages.json").read_text())["base"]["result"]["path"]
    base = choice_hits(load_backbone(base_dir), fresh, seed=0)
    cdm = choice_hits(load_backbone(out / "cdm"), fresh, seed=0)
    direction, p = mcnemar(cdm, base)
    assert len(cdm) == len(base) == 400
    assert direction > 0 and p is not None and p < 0.05, (sum(cdm), sum(base), p)


def test_the_cwm_after_grpo_and_dpo_is_a_row_a_claim_and_a_column(demo_run):
    out, _ = demo_run
    stages = json.loads((out / "stages.json").read_text())
    judged, report = _judged(out), _report(out)
    for key, (row, objective) in REWARD_MODELS.items():
        rl = stages[key]["result"]
        assert rl["steps"] == 2 and rl["objective"] == objective and rl["reward_first"] <= 0.0, rl
        assert len(judged[row]) == len(judged["Copy"]) and len(judged[row][0]["score"]) == 1
        assert f"| {row} |" in report and f"Reward optimisation with the CDM ({objective.upper()})" in report
        assert f"2 {objective.upper()} steps" in report
    rows = [row for row, _ in REWARD_MODELS.values()]
    assert f"| C-FT | CWM | {' | '.join(rows)} |" in report  # the examples table shows their samples


def test_transition_success_is_judged_for_every_model(demo_run):
    """Every row of judged.json carries transition success per candidate; the true targets through
    the tokenizer parse to their scenes (the exact tokenizer), the source (Copy) never does."""
    out, _ = demo_run
    judged = _judged(out)
    assert all(len(r["transition"]) == len(r["es"]) for rows in judged.values() for r in rows)
    ceiling = [r["transition"][0] for r in judged[CEILING]]
    assert sum(ceiling) / len(ceiling) >= 0.9 and not any(r["transition"][0] for r in judged["Copy"])
    curve = json.loads((out / "stages.json").read_text())["curve"]["result"]
    assert set(curve) == {"CDM", "C-FT"} and all(pts[0][0] == 0 for pts in curve.values())
    assert (out / "figures" / "learning_curve.png").is_file()


def test_a_rerun_resumes_every_stage_but_the_report(demo_run, capsys):
    out, _ = demo_run
    assert main([*DEMO, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "done before" in printed and "[report] done before" not in printed


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cdm_reads_the_change_with_enough_data(tmp_path, monkeypatch):
    """With 5000 triplets (canonical labels) and 3000 steps the smoke base's CDM reads the
    change: measured on the smoke base with the word link (100 test triplets), exact action
    0.17, slot accuracy 0.47, the true action picked out of five 0.53 (base 0.21, chance 0.20).
    About 8 minutes on 2 cores; opt in with -m slow."""
    from worldboot.demo import Demo, DemoConfig, TrainRecipe

    monkeypatch.setenv("WORLDBOOT_NO_PROGRESS", "1")
    cfg = DemoConfig(train_per_subset=1000, test_per_subset=20, clips=1, paraphrase=False,
                     cdm=TrainRecipe("configs/demo/cdm.yaml", ["max_steps=3000", "optim.lr=2e-3",
                                                               "optim.warmup_steps=150"]))
    demo = Demo(cfg, tmp_path / "demo", say=lambda _line: None)
    for stage in ("base", "data"):
        demo._done(stage, getattr(demo, f"stage_{stage}")(), 0.0)
    result = demo.stage_cdm()
    base, cdm = result["Chameleon ZS (base)"]["choice_accuracy"], result["CDM"]["choice_accuracy"]
    assert cdm >= 0.3 and cdm >= base + 0.1, (base, cdm)
    assert result["CDM"]["action_accuracy"] >= 0.15, result["CDM"]  # measured 0.17
