"""The study's files: YAML mistakes once accepted (an unknown key in an item, a ``pattern``
without ``{id}``, a model named null), a votes database opened by another program's SQLite file
or recreated empty after a move, and an export index that needs no image."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpers import STUDY_MODELS
from helpers import make_study as study_of
from worldboot.cli import main
from worldboot.errors import ConfigError, DataError
from worldboot.study.export import index_study, is_export
from worldboot.study.spec import load_study
from worldboot.study.votes import VoteStore, VotesUnavailable

MODELS = STUDY_MODELS


def make_study(root: Path, items: dict[str, str], text: str | None = None) -> Path:
    """:func:`helpers.make_study`, named "files", with no reference."""
    return study_of(root, items, text, name="files", reference=None)


ITEMS_YAML = """name: files
items:
  - {id: i1, subset: table, source: src/i1.png, action: act}
  - id: i2
    subst: table
    source: src/i2.png
    action: act
"""


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ("models: {A: A, B: {dir: B, pattern: best.png}}", "model 'B': `pattern` must be text naming the item as {id}"),
        ("models: {A: A, B: {dir: B, pattern: ''}}", "`pattern` must be text naming the item as {id}"),
        ("models:\n  A: A\n  null: B\n", "study.yaml:9: model names must be text, got None"),
        ("models: {A: A, 3: B}", "model names must be text, got 3"),
    ],
)
def test_model_mistakes_are_refused(tmp_path, models, says):
    text = ITEMS_YAML.replace("    subst: table\n", "") + models + "\n"
    path = make_study(tmp_path, {"i1": "table", "i2": "table"}, text)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert says in str(err.value)


def test_an_unknown_item_key_is_refused_with_its_line(tmp_path, capsys):
    path = make_study(tmp_path, {"i1": "table", "i2": "table"}, ITEMS_YAML + "models: {A: A, B: B}\n")
    with pytest.raises(ConfigError, match=r"study.yaml:5: unknown item keys \['subst'\]; known: \['id', 'subset'"):
        load_study(path)
    assert main(["serve", "--study", str(path), "--export", str(tmp_path / "v.csv")]) == 2
    assert "study.yaml:5: unknown item keys ['subst']" in capsys.readouterr().err
    # Keys that are not text are named too (not a TypeError from sorting them).
    path.write_text(ITEMS_YAML.replace("subst", "1") + "top: 2\n1: 3\nmodels: {A: A, B: B}\n")
    with pytest.raises(ConfigError, match=r"unknown study keys \[1, 'top'\]"):
        load_study(path)
    path.write_text(ITEMS_YAML.replace("subst", "1") + "models: {A: A, B: B}\n")
    with pytest.raises(ConfigError, match=r"study.yaml:5: unknown item keys \[1\]"):
        load_study(path)


def test_the_export_index_needs_no_image(tmp_path):
    path = make_study(tmp_path, {"i1": "s1", "i2": "s2"})
    (tmp_path / "A" / "i1.png").unlink()
    for folder in ("B", "src"):
        for image in (tmp_path / folder).iterdir():
            image.unlink()
        (tmp_path / folder).rmdir()
    index = index_study(path)
    assert index.name == "files" and index.labels == {"i1": ("s1", "act"), "i2": ("s2", "act")}
    assert index.inputs[tmp_path / "A" / "i2.png"] == "the output of model 'A' on item 'i2'"
    assert index.inputs[tmp_path / "src" / "i1.png"] == "the source image of item 'i1'"
    with pytest.raises(DataError, match="output folder of model 'B' not found"):
        load_study(path)


def test_another_programs_database_is_never_added_to(tmp_path):
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (x)")
    before = db.read_bytes()
    for create in (True, False):
        with pytest.raises(DataError, match=r"not a votes database of worldboot .*tables \['notes'\]"):
            VoteStore(db, "files", create=create)
    assert db.read_bytes() == before
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(DataError, match="not a votes database of worldboot"):
        VoteStore(empty, "files", create=False)  # reading: nothing to read, and nothing written
    assert empty.stat().st_size == 0
    assert VoteStore(empty, "files").votes() == []  # serving: an empty file becomes the database


def test_a_database_gone_while_open_is_reported_not_recreated(tmp_path):
    db = tmp_path / "v.sqlite"
    store = VoteStore(db, "files")
    store.record("a", "i1", "A", "B", MODELS)
    db.unlink()
    for use in (store.votes, lambda: store.record("a", "i2", "A", "B", MODELS)):
        with pytest.raises(VotesUnavailable, match=f"the votes database {db} is gone"):
            use()
    assert not db.exists()


def test_is_export_reads_the_header_only(tmp_path):
    (tmp_path / "a.csv").write_text("annotator,item_id,subset,action,best,worst,shown,created_at,updated_at\nx\n")
    (tmp_path / "b.csv").write_text("annotator,item_id\n")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert is_export(tmp_path / "a.csv")
    assert not any(is_export(tmp_path / n) for n in ("b.csv", "c.png", "missing.csv"))
