"""``worldboot evaluate plot`` on odd inputs: the --out format, K results whose k, repeat or
score are no usable numbers, text with ``$``, models with different K, a model named ``_x``,
and CSV files with a byte-order mark or a cell over two lines."""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import pytest

from worldboot.cli import main
from worldboot.errors import DataError
from worldboot.evaluate.plots import plot_score_vs_k, read_k_rows

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"
ROW = {"model": "A", "k": 1, "repeat": 0, "subset": "s", "score": 3.0}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _plot(args, capsys):
    """Exit code and stderr of ``worldboot evaluate plot ARGS``."""
    code = main(["evaluate", "plot", *map(str, args)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture()
def drawn(monkeypatch):
    """The figures plot_score_vs_k closes, kept open for a look."""
    figures: list = []
    close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    for fig in figures:
        close(fig)


# -- --out ------------------------------------------------------------------------------------------


def test_out_without_suffix_is_png_and_unknown_suffix_is_refused(tmp_path, capsys):
    f = _jsonl(tmp_path / "ok.jsonl", [ROW])
    assert _plot([f, "--out", tmp_path / "a"], capsys)[0] == 0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert _plot([f, "--out", tmp_path / "b.PDF"], capsys)[0] == 0
    assert (tmp_path / "b.PDF").read_bytes()[:4] == b"%PDF"
    # Checked before anything is read or drawn: the missing input is not reached.
    code, err = _plot([tmp_path / "missing.jsonl", "--out", tmp_path / "a.txt"], capsys)
    assert code == 2 and "--out" in err and "a.txt" in err and ".png" in err and ".svg" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a.txt").exists()
    code, err = _plot([f, "--out", tmp_path], capsys)
    assert code == 2 and "is a folder" in err


def test_non_finite_reference_is_refused(tmp_path, capsys):
    f = _jsonl(tmp_path / "ok.jsonl", [ROW])
    for ref in ("GoT=inf", "GoT=nan", "GoT=", "=3"):
        code, err = _plot([f, "--out", tmp_path / "a.png", "--ref", ref], capsys)
        assert code == 2 and f"--ref '{ref}'" in err


# -- the values of a row ----------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "says"), [
    ("k", 0, "k must be an integer of at least 1, got 0"),
    ("k", -4, "k must be an integer of at least 1, got -4"),
    ("k", 2.9, "k must be an integer of at least 1, got 2.9"),
    ("k", True, "field 'k' must be a number, got bool"),
    ("k", "two", "field 'k' must be a number, got 'two'"),
    ("repeat", True, "field 'repeat' must be a number, got bool"),
    ("repeat", 1.5, "repeat must be an integer of at least 0, got 1.5"),
    ("repeat", -1, "repeat must be an integer of at least 0, got -1"),
    ("score", True, "field 'score' must be a number, got bool"),
    ("score", [3], "field 'score' must be a number, got list"),
    ("model", False, "field 'model' must be a string, got bool"),
])
def test_bad_value_in_jsonl_names_file_and_line(tmp_path, capsys, field, value, says):
    f = _jsonl(tmp_path / "bad.jsonl", [ROW, {**ROW, field: value}])
    code, err = _plot([f, "--out", tmp_path / "a.png"], capsys)
    assert code == 2 and f"bad.jsonl:2: {says}" in err, err


@pytest.mark.parametrize(("cells", "says"), [
    ("A,0,0,s,3", "k must be an integer of at least 1, got 0"),
    ("A,2.9,0,s,3", "k must be an integer of at least 1, got 2.9"),
    ("A,true,0,s,3", "field 'k' must be a number, got 'true'"),
    ("A,1,True,s,3", "field 'repeat' must be a number, got 'True'"),
    ("A,1,0,s,inf", "score is not a finite number: inf"),
    ("A,1,0,s,", "missing field: score"),
])
def test_bad_value_in_csv_names_file_and_line(tmp_path, capsys, cells, says):
    f = tmp_path / "bad.csv"
    f.write_text(f"model,k,repeat,subset,score\nA,1,0,s,3\n{cells}\n")
    code, err = _plot([f, "--out", tmp_path / "a.png"], capsys)
    assert code == 2 and f"bad.csv:3: {says}" in err, err


def test_whole_numbers_as_floats_or_text_are_read(tmp_path):
    f = _jsonl(tmp_path / "ok.jsonl", [{**ROW, "k": 4.0, "repeat": 1.0, "score": 3}, {**ROW, "k": "8", "score": " 2.5"}])
    assert read_k_rows(f) == [{"model": "A", "k": 4, "repeat": 1, "subset": "s", "score": 3.0},
                              {"model": "A", "k": 8, "repeat": 0, "subset": "s", "score": 2.5}]


# -- CSV ---------------------------------------------------------------------------------------------


def test_csv_with_byte_order_mark(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbfmodel,k,repeat,subset,score\r\nA,2,0,s,3.5\r\n")
    assert read_k_rows(f) == [{"model": "A", "k": 2, "repeat": 0, "subset": "s", "score": 3.5}]


def test_csv_line_is_where_the_bad_record_starts(tmp_path):
    f = tmp_path / "k.csv"
    # A quoted model name over two lines (line 2-3), a blank line (4), then the bad row (5-6).
    f.write_text('model,k,repeat,subset,score\n"two\nlines",1,0,s,3\n\n"B\nC",0,0,s,3\n')
    with pytest.raises(DataError, match=r"k\.csv:5: k must be an integer"):
        read_k_rows(f)
    f.write_text('model,k,repeat,subset,score\n"two\nlines",1,0,s,3\nB,1,0,s,x\n')
    with pytest.raises(DataError, match=r"k\.csv:4: field 'score' must be a number"):
        read_k_rows(f)


# -- drawing ------------------------------------------------------------------------------------------


def test_user_text_is_drawn_literally(tmp_path, capsys, drawn):
    f = _jsonl(tmp_path / "k.jsonl", [{**ROW, "model": "$x^$", "subset": "$\\alpha"}])
    code, _ = _plot([f, "--out", tmp_path / "a.png", "--title", "$\\frac{a$", "--ref", "$G$=2"], capsys)
    assert code == 0 and (tmp_path / "a.png").stat().st_size > 0
    fig = drawn[0]
    assert fig.get_suptitle() == "$\\frac{a$" and fig.axes[0].get_title() == "$\\alpha"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["$x^$", "$G$ (reference)"]


def test_ticks_are_every_models_k_and_every_model_is_in_the_legend(tmp_path, drawn):
    rows = [{**ROW, "model": "A", "k": k} for k in (1, 2, 4)] + [{**ROW, "model": "_hidden", "k": k} for k in (8, 16)]
    plot_score_vs_k(rows, tmp_path / "a.png", references={"GoT": 3.1})
    fig = drawn[0]
    assert list(fig.axes[0].get_xticks()) == [1, 2, 4, 8, 16]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "4", "8", "16"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A", "_hidden", "GoT (reference)"]
