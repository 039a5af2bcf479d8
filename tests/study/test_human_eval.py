"""The human-evaluation analysis: means of +1/-1/0 and Wilcoxon tests against a reference, by hand."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from helpers import STUDY_MODELS, make_study
from worldboot.errors import ConfigError, DataError
from worldboot.stats import wilcoxon_paired
from worldboot.study.analysis import ALL, DAGGER, analyse_votes, format_markdown
from worldboot.study.spec import default_db_path, load_study
from worldboot.study.votes import VoteStore

MODELS = STUDY_MODELS


# (annotator, item, best, worst). Subset s1: two annotators on six items.
S1_VOTES = [
    ("x", "i1", "A", "R"), ("y", "i1", "A", "B"),
    ("x", "i2", "A", "B"), ("y", "i2", "R", "B"),
    ("x", "i3", "A", "R"), ("y", "i3", "B", "R"),
    ("x", "i4", "R", "A"), ("y", "i4", "A", "B"),
    ("x", "i5", "A", "B"), ("y", "i5", "A", "R"),
    ("x", "i6", "B", "R"), ("y", "i6", "A", "R"),
]  # fmt: skip
# Subset s2: one annotator, six items, R always best and B always worst.
S2_VOTES = [("x", f"j{k}", "R", "B") for k in range(1, 7)]


def exact_signed_rank_p(diffs: list[float]) -> tuple[float, float]:
    """Two-sided signed-rank test by enumerating every sign pattern (zeros dropped, mid-ranks)."""
    d = [x for x in diffs if x != 0]
    mags = sorted(abs(x) for x in d)
    rank = {m: sum(i + 1 for i, v in enumerate(mags) if v == m) / mags.count(m) for m in set(mags)}
    ranks = [rank[abs(x)] for x in d]
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    w_minus = sum(ranks) - w_plus
    null = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product([0, 1], repeat=len(d))
    ]
    low = sum(w <= w_plus + 1e-9 for w in null) / len(null)
    high = sum(w >= w_plus - 1e-9 for w in null) / len(null)
    return min(w_plus, w_minus), min(1.0, 2 * min(low, high))


@pytest.fixture()
def study_and_db(tmp_path):
    path = make_study(
        tmp_path, {**{f"i{k}": "s1" for k in range(1, 7)}, **{f"j{k}": "s2" for k in range(1, 7)}}
    )
    study = load_study(path)
    store = VoteStore(default_db_path(path), study.name)
    for annotator, item, best, worst in S1_VOTES + S2_VOTES:
        store.record(annotator, item, best, worst, shown=list(MODELS))
    return study, store.path


def test_hand_computed_wilcoxon_and_means(study_and_db):
    study, db = study_and_db
    table = analyse_votes(db, study)
    assert table.reference == "R" and table.rows == ["s1", "s2", ALL]
    assert (table.n_votes, table.n_annotators) == (18, 2)

    # Subset s1 by hand. Per-item scores (mean over the two annotators):
    #          i1    i2   i3    i4    i5    i6
    #   A:    1.0   0.5  0.5   0.0   1.0   0.5
    #   R:   -0.5   0.5 -1.0   0.5  -0.5  -1.0
    #   A-R:  1.5   0.0  1.5  -0.5   1.5   1.5
    # Zeros dropped -> |d| = 1.5, 1.5, 0.5, 1.5, 1.5; ranks: 0.5 -> 1, the four 1.5s share 2..5 -> 3.5.
    # W+ = 4 * 3.5 = 14, W- = 1, statistic = min = 1.
    # Null: each of the 2^5 = 32 sign patterns equally likely; W+ <= 1 only when all four 3.5s are
    # negative (1 way) whatever the sign of the rank-1 difference (2 ways): P = 2/32, two-sided 4/32.
    a = table.cells[("s1", "A")]
    assert a.statistic == pytest.approx(1.0)
    assert a.p_value == pytest.approx(0.125)
    assert exact_signed_rank_p([1.5, 0.0, 1.5, -0.5, 1.5, 1.5]) == pytest.approx((1.0, 0.125))
    assert a.n_items == 6 and not a.significant
    # Means over votes: A was chosen best eight times and worst once in 12 votes.
    assert a.mean == pytest.approx(7 / 12)
    assert table.cells[("s1", "R")].mean == pytest.approx((1 + 1 - 6) / 12)
    assert table.cells[("s1", "R")].p_value is None  # the reference is not tested against itself

    # B vs R on s1: B = [-0.5, -1, 0.5, -0.5, -0.5, 0.5], R as above.
    b_minus_r = [0.0, -1.5, 1.5, -1.0, 0.0, 1.5]
    stat, p = exact_signed_rank_p(b_minus_r)
    b = table.cells[("s1", "B")]
    assert (b.statistic, b.p_value) == pytest.approx((stat, p))

    # Subset s2: B - R = -2 on all six items: the most extreme of 2^6 patterns, p = 2/64 < 0.05.
    b2 = table.cells[("s2", "B")]
    assert b2.p_value == pytest.approx(2 / 64) and b2.significant and b2.mean == -1.0
    a2 = table.cells[("s2", "A")]
    assert a2.p_value == pytest.approx(2 / 64) and a2.significant and a2.mean == 0.0

    # All: the twelve items together.
    all_a = [1.5, 0.0, 1.5, -0.5, 1.5, 1.5] + [-1.0] * 6
    assert table.cells[(ALL, "A")].p_value == pytest.approx(exact_signed_rank_p(all_a)[1])
    assert table.cells[(ALL, "A")].mean == pytest.approx(7 / 18)


def test_markdown_marks_significant_gaps(study_and_db):
    study, db = study_and_db
    text = format_markdown(analyse_votes(db, study))
    lines = text.splitlines()
    assert lines[0] == "| Subset | A | B | R (ref.) | Votes |"
    assert lines[2] == "| s1 | 0.58 | -0.25 | -0.33 | 12 |"
    assert lines[3] == f"| s2 | 0.00{DAGGER} | -1.00{DAGGER} | 1.00 | 6 |"
    assert lines[4].startswith("| **All** |")
    assert "Wilcoxon signed-rank" in text and "18 votes by 2 annotator(s)" in text


def test_reference_choice_default_db_and_errors(study_and_db, tmp_path):
    study, db = study_and_db
    # By path, with the default database beside the study, and another reference.
    table = analyse_votes(None, study.path, reference="A")
    assert table.reference == "A" and table.cells[("s1", "A")].p_value is None
    assert table.cells[("s1", "R")].p_value == pytest.approx(0.125)  # symmetric in the pair
    with pytest.raises(ConfigError, match="not a model"):
        analyse_votes(db, study, reference="Z")
    with pytest.raises(DataError, match="not found"):
        analyse_votes(tmp_path / "missing.sqlite", study)
    (tmp_path / "folder").mkdir()
    for create in (False, True):  # evaluate human, and the server (it made nothing there either)
        with pytest.raises(DataError, match=r"votes database .*folder is a folder: name the SQLite file"):
            VoteStore(tmp_path / "folder", study.name, create=create)
    assert list((tmp_path / "folder").iterdir()) == []
    VoteStore(tmp_path / "empty.sqlite", study.name)
    with pytest.raises(DataError, match="no votes"):
        analyse_votes(tmp_path / "empty.sqlite", study)
    data = table.to_json()
    assert data["rows"][0]["subset"] == "s1" and data["rows"][0]["A"]["p_value"] is None


@pytest.mark.parametrize(
    "diffs",
    [
        [1.5, 0.0, 1.5, -0.5, 1.5, 1.5],
        [1.0, 1.0, -1.0, 2.0, 0.0, 0.0, -0.5, 1.0],
        [0.5, -0.5, 1.0, 1.0, 1.0, -2.0, 2.0],
    ],
)
def test_fast_tied_p_value_equals_scipy_permutation(diffs):
    from scipy.stats import wilcoxon

    reference = wilcoxon(diffs)  # method="auto": exhaustive permutations here (ties, n <= 13)
    stat, p = wilcoxon_paired(diffs, [0.0] * len(diffs))
    assert (stat, p) == pytest.approx((float(reference.statistic), float(reference.pvalue)))
    assert (stat, p) == pytest.approx(exact_signed_rank_p(diffs))


def test_subset_without_votes_keeps_its_row(tmp_path):
    path = make_study(tmp_path, {"a1": "voted", "b1": "silent"})
    store = VoteStore(default_db_path(path), "human")
    store.record("x", "a1", "A", "B", shown=list(MODELS))
    table = analyse_votes(None, path)
    assert table.rows == ["voted", "silent", ALL]
    assert math.isnan(table.cells[("silent", "A")].mean) and table.cells[("silent", "A")].p_value is None
    assert "| silent | – | – | – | 0 |" in format_markdown(table)
    assert table.to_json()["rows"][1]["A"]["mean"] is None


def test_evaluate_human_command(study_and_db, tmp_path, capsys):
    from worldboot.cli import main, subcommand_names

    assert ["evaluate", "human"] in subcommand_names()
    study, db = study_and_db
    out = tmp_path / "report"
    assert (
        main(["evaluate", "human", str(study.path), "--db", str(db), "--reference", "A", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| Subset | A (ref.) | B | R | Votes |" in printed
    assert (out / "human_eval.md").read_text() in printed
    assert json.loads((out / "human_eval.json").read_text())["reference"] == "A"
    assert main(["evaluate", "human", str(study.path), "--reference", "Z"]) == 2
    for alpha in ("5", "-1", "nan"):
        assert main(["evaluate", "human", str(study.path), "--db", str(db), "--alpha", alpha]) == 2
    assert "--alpha must lie between 0 and 1" in capsys.readouterr().err


def test_degenerate_tests():
    assert wilcoxon_paired([], []) == (None, None)
    assert wilcoxon_paired([0.5, 1.0], [0.5, 1.0]) == (0.0, 1.0)
    stat, p = wilcoxon_paired([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    assert stat == 0.0 and p == pytest.approx(2 / 32)
    assert not math.isnan(p)


def test_paired_tests_return_the_direction_of_their_own_statistic():
    from scipy.stats import binomtest

    from worldboot.stats import binomial_test, mcnemar, paired_test

    # McNemar: only discordant pairs count (b = 3 wins of x, c = 1 of y).
    x, y = [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 1, 0]
    assert mcnemar(x, y) == (1, binomtest(3, 4, 0.5).pvalue)
    assert mcnemar(y, x)[0] == -1
    assert mcnemar([1, 0], [1, 0]) == (0, 1.0) and mcnemar([], []) == (0, None)
    # Signed ranks: x wins 9 small, loses 1 large; the mean says y, the ranks say x.
    xs, ys = [1.0] * 9 + [0.0], [0.0] * 9 + [20.0]
    assert sum(xs) < sum(ys) and paired_test(xs, ys)[0] == 1
    assert paired_test([None, 1.0], [2.0, None]) == (0, None)
    assert binomial_test([1.0] * 8 + [0.0] * 2, 0.2) == (1, binomtest(8, 10, 0.2).pvalue)
    assert binomial_test([0.0] * 10, 0.2)[0] == -1
