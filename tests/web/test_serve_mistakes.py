"""``worldboot serve`` mistakes that once lost data or printed a traceback: ``--export`` over
the study's own files or a user's file, worldboot's tables added to another program's SQLite
file, the votes database moved while serving (500 and a new empty file), an empty ``--host``
(every interface), a port in use announced before uvicorn's error, an export that needed the
images, and the /play page's upload limit rounded down to whole MB."""

from __future__ import annotations

import csv
import io
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fastapi.testclient import TestClient

from worldboot.cli import main
from worldboot.data.schema import Triplet, write_manifest
from worldboot.study.spec import load_study
from worldboot.study.votes import CSV_COLUMNS, VoteStore
from worldboot.web.app import create_app
from worldboot.web.play import size_text

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "web"
ORIGIN = {"Origin": "http://testserver"}
ITEMS = {"move-red-left": "blocks", "green-on-blue": "blocks", "push-yellow-off": "table"}


@pytest.fixture()
def here(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped example study (as the reviewer made it), as the current folder."""
    shutil.copytree(EXAMPLE / "example_study", tmp_path / "example_study")
    shutil.copy(EXAMPLE / "example_study.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def served(monkeypatch) -> dict:
    """uvicorn.run replaced: what it was called with (nothing when the command refused)."""
    import uvicorn

    calls: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    return calls


def _vote_all(db: Path) -> None:
    study = load_study("example_study.yaml")
    store = VoteStore(db, study.name)
    for item in study.items:
        shown = study.shown_order("ann1", item.id)
        store.record("ann1", item.id, shown[0], shown[1], shown)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("worldboot serve: error: ") and "Traceback" not in err[0], err
    return err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(target: str, *more: str) -> int:
    return main(["serve", "--study", "example_study.yaml", *more, "--export", target])


# -- 1: --export never writes over a file the study reads, nor a user's file --------------------------


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("example_study/sources/move-red-left.png", "the source image of item 'move-red-left'"),
        ("example_study/outputs/system-a/green-on-blue.png", "the output of model 'system-a' on item 'green-on-blue'"),
        ("example_study/outputs/system-c/push-yellow-off.png", "the output of model 'system-c'"),
        ("example_study.yaml", "the study file"),
        ("example_study.votes.sqlite", "the votes database"),
        ("keep.txt", "keep.txt exists and is not an earlier export of votes"),
        ("example_study", "is a folder"),
    ],
)
def test_export_never_writes_over_the_studys_files_or_a_users_file(here, capsys, target, says):
    _vote_all(here / "example_study.votes.sqlite")
    (here / "keep.txt").write_text("my notes\n")
    before = {p: p.read_bytes() for p in here.rglob("*") if p.is_file()}
    assert _export(target) == 2
    assert says in _one_line(capsys)
    assert {p: p.read_bytes() for p in here.rglob("*") if p.is_file()} == before


def test_export_never_writes_over_a_manifest_and_refreshes_its_own_csv(here, capsys):
    trip = here / "trip"
    write_manifest(
        trip / "manifest.jsonl",
        [Triplet(i, s, str(here / "example_study" / "sources" / f"{i}.png"), f"act {i}", None) for i, s in ITEMS.items()],
    )
    data = yaml.safe_load((here / "example_study.yaml").read_text())
    del data["items"]
    data.update(root=".", manifest="trip/manifest.jsonl")
    data["models"] = {m: f"example_study/outputs/{m}" for m in ("system-a", "system-b", "system-c")}
    (here / "trip.yaml").write_text(yaml.safe_dump(data))
    manifest = (trip / "manifest.jsonl").read_bytes()
    VoteStore(here / "trip.votes.sqlite", data["name"])
    args = ["serve", "--study", "trip.yaml", "--export"]
    assert main([*args, str(trip / "manifest.jsonl")]) == 2
    assert "the study's manifest trip/manifest.jsonl" in _one_line(capsys)
    assert (trip / "manifest.jsonl").read_bytes() == manifest
    # A new file, then the same file again: an earlier export is refreshed, not refused.
    assert main([*args, "votes.csv"]) == 0 and main([*args, "votes.csv"]) == 0
    assert (here / "votes.csv").read_text().splitlines() == [",".join(CSV_COLUMNS)]


# -- 2: a database that is not a votes database is never added to -------------------------------------


def test_a_database_of_another_program_is_refused_and_left_as_it_was(here, capsys, served):
    import sqlite3

    with sqlite3.connect(here / "other.db") as con:
        con.execute("CREATE TABLE mine (x)")
    before = (here / "other.db").read_bytes()
    (here / "empty.db").touch()
    port = str(_free_port())
    assert _export("out.csv", "--db", "other.db") == 2
    assert "other.db is not a votes database of worldboot (no `meta` row" in _one_line(capsys)
    assert main(["serve", "--study", "example_study.yaml", "--db", "other.db", "--port", port]) == 2
    assert "holds the tables ['mine']" in _one_line(capsys)
    assert (here / "other.db").read_bytes() == before and not served
    # An empty file: nothing to export (and left empty); serving makes it the votes database.
    assert _export("out.csv", "--db", "empty.db") == 2
    assert "empty.db is not a votes database" in _one_line(capsys)
    assert (here / "empty.db").stat().st_size == 0 and not (here / "out.csv").exists()
    assert main(["serve", "--study", "example_study.yaml", "--db", "empty.db", "--port", port]) == 0
    assert VoteStore(here / "empty.db", "example-study", create=False).votes() == []


# -- 3: the votes database moved while serving --------------------------------------------------------


def test_votes_database_moved_while_serving_is_an_error_page_not_a_new_file(here, caplog):
    db = here / "votes.sqlite"
    client = TestClient(create_app(load_study("example_study.yaml"), db), headers=ORIGIN, follow_redirects=False)
    client.post("/login", data={"annotator": "ann1"})
    item = client.get("/next").headers["location"]
    assert client.post(f"{item}/vote", data={"best": "0", "worst": "1"}).status_code == 303
    db.rename(here / "moved.sqlite")
    for r in (client.get("/next"), client.get("/done"), client.post(f"{item}/vote", data={"best": "1", "worst": "0"})):
        assert r.status_code == 503
        assert "Votes database unavailable" in r.text and f"{db} is gone" in r.text
    assert not db.exists()  # no empty database in its place, to take the next votes
    assert "Traceback" not in caplog.text and f"{db} is gone" in caplog.text
    (here / "moved.sqlite").rename(db)  # put back: the server goes on with the votes it had
    assert client.get("/next").status_code == 303
    assert len(VoteStore(db, "example-study").votes()) == 1


# -- 4 and 7: where the server listens -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_not_every_interface(here, capsys, served, host):
    assert main(["serve", "--study", "example_study.yaml", "--host", host, "--port", str(_free_port())]) == 2
    assert "--host is empty" in _one_line(capsys) and not served


def test_a_port_in_use_is_one_line_before_anything_is_announced(here, capsys, served):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--study", "example_study.yaml", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"worldboot serve: error: port {port} on 127.0.0.1 is in use: choose another --port" in err
    assert "open http" not in err and not served
    assert main(["serve", "--study", "example_study.yaml", "--port", str(port)]) == 0  # free again
    assert served["port"] == port


# -- 5: the export needs the study's YAML, not its images ----------------------------------------------


def test_export_takes_subsets_and_actions_from_the_yaml_not_the_images(here, capsys):
    db = here / "example_study.votes.sqlite"
    _vote_all(db)
    (here / "example_study" / "outputs" / "system-a" / "move-red-left.png").rename(here / "moved.png")
    assert _export("a.csv") == 0
    shutil.rmtree(here / "example_study" / "outputs" / "system-c")
    assert _export("b.csv") == 0
    for name in ("a.csv", "b.csv"):
        rows = list(csv.DictReader(io.StringIO((here / name).read_text())))
        assert {r["item_id"]: r["subset"] for r in rows} == ITEMS
        assert all(r["action"] for r in rows)
    assert "wrote 3 votes" in capsys.readouterr().out


# -- 8: the upload limit as it is -----------------------------------------------------------------------


def test_play_page_shows_the_real_upload_limit():
    fake = SimpleNamespace(num_samples=2, max_samples=4, verifier=None, get=lambda rollout_id: None)
    for limit, shown in ((int(0.5 * 2**20), "up to 512 KB"), (8 * 2**20, "up to 8 MB"), (int(1.5 * 2**20), "up to 1.5 MB")):
        page = TestClient(create_app(predictor=fake, max_upload_bytes=limit)).get("/play")
        assert page.status_code == 200 and shown in page.text
    assert size_text(10485) == "10.2 KB"
