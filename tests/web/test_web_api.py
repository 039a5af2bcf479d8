"""The web app through FastAPI's TestClient: voting, resume, re-submit, export, safety, /play."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from helpers import f32_atol
from worldboot.cli import main
from worldboot.errors import ConfigError, DataError
from worldboot.study.spec import load_study
from worldboot.study.votes import VoteStore
from worldboot.web.app import LOOPBACK_HOSTS, create_app, same_origin

ORIGIN = {"Origin": "http://testserver"}
MODELS = ["alpha", "beta", "gamma"]
ITEMS = {"k-1": "kubric", "k-2": "kubric", "s-1": "something"}


def _png(path: Path, color: tuple[int, int, int], size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def make_study(root: Path, extra: dict | None = None, items: dict | None = None) -> Path:
    """A study with one flat colour per model (so an image tells which model it came from)."""
    items = items or ITEMS
    for n, item_id in enumerate(items):
        _png(root / "src" / f"{item_id}.png", (10 * n, 10 * n, 10 * n))
        for m, model in enumerate(MODELS):
            _png(root / "out" / model / f"{item_id}.png", (200, 60 * m, 10 * n))
    data = {
        "name": "api-study",
        "items": [
            {"id": i, "subset": s, "source": f"src/{i}.png", "action": f"do {i}"} for i, s in items.items()
        ],
        "models": {m: f"out/{m}" for m in MODELS},
    }
    data.update(extra or {})
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def model_of(image_bytes: bytes) -> str:
    """Which model an output image belongs to (its green channel encodes the model)."""
    g = Image.open(io.BytesIO(image_bytes)).convert("RGB").getpixel((0, 0))[1]
    return MODELS[g // 60]


@pytest.fixture()
def study(tmp_path):
    return load_study(make_study(tmp_path / "study"))


@pytest.fixture()
def app(study, tmp_path):
    return create_app(study, tmp_path / "votes.sqlite", max_upload_bytes=32 * 1024)


def client_for(app, annotator: str | None = None) -> TestClient:
    client = TestClient(app, headers=ORIGIN, follow_redirects=False)
    if annotator:
        r = client.post("/login", data={"annotator": annotator})
        assert r.status_code == 303 and r.headers["location"] == "/next"
    return client


def vote(client: TestClient, item_id: str, best: int, worst: int):
    return client.post(f"/item/{item_id}/vote", data={"best": str(best), "worst": str(worst)})


def test_login_page_then_first_item(app):
    client = client_for(app)
    r = client.get("/")
    assert r.status_code == 200 and 'name="annotator"' in r.text
    assert client.post("/login", data={"annotator": "bad id!"}).status_code == 400
    client = client_for(app, "ann1")
    assert client.get("/next").headers["location"] == "/item/k-1"
    page = client.get("/item/k-1")
    assert page.status_code == 200
    assert "Item 1 of 3" in page.text and "0 of 3 voted" in page.text and "do k-1" in page.text
    # Blind: no model name appears on the page.
    assert not any(m in page.text for m in MODELS)


def test_vote_maps_slots_to_models_and_moves_on(app, study, tmp_path):
    client = client_for(app, "ann1")
    shown = [model_of(client.get(f"/image/k-1/{s}").content) for s in range(3)]
    assert shown == study.shown_order("ann1", "k-1") and sorted(shown) == MODELS
    r = vote(client, "k-1", best=2, worst=0)
    assert r.status_code == 303 and r.headers["location"] == "/item/k-2"
    [v] = VoteStore(tmp_path / "votes.sqlite", "api-study").votes()
    assert (v.annotator, v.item_id, v.best, v.worst, v.shown) == ("ann1", "k-1", shown[2], shown[0], shown)
    assert "1 of 3 voted" in client.get("/item/k-2").text


def test_order_stable_on_reload_and_differs_between_annotators(app, study):
    client = client_for(app, "ann1")
    first = [client.get(f"/image/s-1/{s}").content for s in range(3)]
    again = [client.get(f"/image/s-1/{s}").content for s in range(3)]
    assert first == again
    assert client.get("/image/s-1/0").headers["cache-control"] == "no-store"
    orders = {tuple(study.shown_order(f"ann{i}", "s-1")) for i in range(20)}
    assert len(orders) > 1  # 20 annotators do not all see one order
    # The order survives a restart: it is derived from a digest, not from Python's salted hash().
    assert study.shown_order("ann1", "s-1") == load_study(study.path).shown_order("ann1", "s-1")


def test_returning_annotator_resumes_at_first_unvoted(app):
    client = client_for(app, "ann1")
    assert vote(client, "k-1", 0, 1).status_code == 303
    # After the last item it wraps around to the first unvoted one.
    assert vote(client, "s-1", 0, 1).headers["location"] == "/item/k-2"
    # A new browser, same id: resumes at k-2, the first item without a vote.
    client2 = client_for(app, "ann1")
    assert client2.get("/next").headers["location"] == "/item/k-2"
    assert "2 of 3 voted" in client2.get("/item/k-2").text
    assert vote(client2, "k-2", 1, 2).headers["location"] == "/done"
    assert client2.get("/next").headers["location"] == "/done"
    done = client2.get("/done")
    assert "Thank you" in done.text and "3 of 3" in done.text
    # Another annotator starts from the beginning.
    assert client_for(app, "ann2").get("/next").headers["location"] == "/item/k-1"


def test_resubmit_replaces_vote(app, study, tmp_path):
    client = client_for(app, "ann1")
    vote(client, "k-2", 0, 1)
    vote(client, "k-2", 2, 0)
    store = VoteStore(tmp_path / "votes.sqlite", "api-study")
    [v] = store.votes()
    shown = study.shown_order("ann1", "k-2")
    assert (v.best, v.worst) == (shown[2], shown[0])
    assert v.updated_at >= v.created_at
    # The page shows the stored vote again.
    page = client.get("/item/k-2").text
    assert re.search(r'name="best" value="2" required\s+checked', page)
    assert re.search(r'name="worst" value="0" required\s+checked', page)
    assert len(re.findall(r"required\s+checked", page)) == 2
    # The constraint itself: a second row for (annotator, item) is refused by SQLite.
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO votes VALUES ('ann1', 'k-2', 'alpha', 'beta', '[]', 'now', 'now')")


def test_bad_votes_are_refused(app, tmp_path):
    client = client_for(app, "ann1")
    r = vote(client, "k-1", 1, 1)
    assert r.status_code == 400 and "must be different" in r.text
    assert client.post("/item/k-1/vote", data={"best": "0"}).status_code == 400
    assert vote(client, "k-1", 0, 7).status_code == 400
    assert VoteStore(tmp_path / "votes.sqlite", "api-study").votes() == []
    # Not logged in: no vote, no images.
    anon = client_for(app)
    assert vote(anon, "k-1", 0, 1).status_code == 401
    assert anon.get("/image/k-1/0").status_code == 401
    assert anon.get("/item/k-1").headers["location"] == "/"


def test_votes_leave_only_by_the_export_command(app, study, tmp_path):
    a, b = client_for(app, "ann1"), client_for(app, "ann2")
    vote(a, "k-1", 0, 1)
    vote(b, "s-1", 2, 1)
    # The votes name the models: no route gives them to an annotator (it would unblind them).
    assert a.get("/export.csv").status_code == 404 and client_for(app).get("/export.csv").status_code == 404
    out = tmp_path / "votes.csv"
    code = main(
        ["serve", "--study", str(study.path), "--db", str(tmp_path / "votes.sqlite"), "--export", str(out)]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(x["annotator"], x["item_id"], x["subset"]) for x in rows] == [
        ("ann1", "k-1", "kubric"),
        ("ann2", "s-1", "something"),
    ]
    assert rows[1]["best"] == study.shown_order("ann2", "s-1")[2]
    # No database: one-line error, exit 2.
    assert (
        main(
            ["serve", "--study", str(study.path), "--db", str(tmp_path / "none.sqlite"), "--export", str(out)]
        )
        == 2
    )
    # The export never writes over the votes or the study it is made from, and an empty name is
    # refused (it was taken as "no export", and the server started).
    db, study_text = tmp_path / "votes.sqlite", Path(study.path).read_text()
    for target in (db, Path(study.path), ""):
        assert main(["serve", "--study", str(study.path), "--db", str(db), "--export", str(target)]) == 2
    assert len(VoteStore(db, "api-study").votes()) == 2 and Path(study.path).read_text() == study_text


def test_database_belongs_to_one_study(study, tmp_path):
    VoteStore(tmp_path / "v.sqlite", "api-study")
    with pytest.raises(ConfigError, match="holds the votes of study"):
        VoteStore(tmp_path / "v.sqlite", "other-study")
    (tmp_path / "junk.sqlite").write_text("not a database at all, just text" * 20)
    with pytest.raises(DataError, match="not a votes database"):
        VoteStore(tmp_path / "junk.sqlite", "api-study")


@pytest.mark.parametrize(
    "url",
    [
        "/item/..%2F..%2Fetc%2Fpasswd",
        "/image/..%2Fstudy.yaml/source",
        "/image/%2e%2e/source",
        "/image/k-1/..%2F..%2Fstudy.yaml",
        "/image/k-1/3",
        "/image/k-1/-1",
        "/image/nope/0",
        "/static/..%2Fapp.py",
        "/static/../app.py",
    ],
)
def test_requests_cannot_reach_other_files(app, url):
    r = client_for(app, "ann1").get(url)
    assert r.status_code in (400, 404, 422)
    assert b"create_app" not in r.content and b"api-study" not in r.content


def test_study_paths_cannot_escape_root(tmp_path):
    root = tmp_path / "study"
    _png(tmp_path / "outside.png", (1, 2, 3))
    path = make_study(root)
    data = yaml.safe_load(path.read_text())
    data["items"].append({"id": "../x", "subset": "s", "source": "src/k-1.png", "action": "a"})
    data["items"].append({"id": "esc", "subset": "s", "source": "../outside.png", "action": "a"})
    data["items"].append({"id": "abs", "subset": "s", "source": str(tmp_path / "outside.png"), "action": "a"})
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    assert [i.id for i in study.items] == list(ITEMS)
    reasons = " | ".join(str(p) for p in study.problems)
    assert "bad item id '../x'" in reasons and reasons.count("escapes") == 2
    assert f"{path}:" in reasons  # each problem names the file and the line
    with pytest.raises(DataError, match="bad item id"):
        load_study(path, strict=True)
    # A model whose folder leaves the root is refused outright.
    data["models"]["alpha"] = "../"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match="escapes"):
        load_study(path)
    data["models"]["alpha"] = {"dir": "out/alpha", "pattern": "../../../{id}.png"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match="no usable item"):
        load_study(path)


def test_study_items_from_a_manifest(tmp_path):
    from worldboot.data.schema import Triplet, write_manifest

    root = tmp_path / "m"
    path = make_study(root)
    write_manifest(
        root / "bench.jsonl",
        [Triplet(i, s, str(root / "src" / f"{i}.png"), f"manifest {i}", None) for i, s in ITEMS.items()],
    )
    with (root / "bench.jsonl").open("a") as f:
        f.write("{not json\n")
    data = yaml.safe_load(path.read_text())
    del data["items"]
    data["manifest"] = "bench.jsonl"
    path.write_text(yaml.safe_dump(data))
    study = load_study(path)
    assert [(i.id, i.subset, i.action) for i in study.items] == [
        (i, s, f"manifest {i}") for i, s in ITEMS.items()
    ]
    assert len(study.problems) == 1 and "bench.jsonl:4" in str(next(iter(study.problems)))


def test_study_errors_are_one_line(tmp_path):
    path = make_study(tmp_path / "s", extra={"colour": "red"})
    with pytest.raises(ConfigError, match="unknown study keys"):
        load_study(path)
    path = make_study(tmp_path / "t", extra={"reference": "delta"})
    with pytest.raises(ConfigError, match="reference 'delta'"):
        load_study(path)
    path = make_study(tmp_path / "t")
    (tmp_path / "t" / "out" / "beta" / "k-2.png").unlink()
    # A GIF named .png: formats are checked by content, not by name.
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "out" / "gamma" / "s-1.png", format="GIF")
    study = load_study(path)
    assert [i.id for i in study.items] == ["k-1"] and len(study.problems) == 2
    reasons = " | ".join(str(p) for p in study.problems)
    assert "no k-2.png" in reasons and "is GIF" in reasons
    assert main(["serve", "--study", str(path), "--strict", "--export", str(tmp_path / "x.csv")]) == 2
    for extra, says in (
        ({"seed": "abc"}, "`seed` must be a whole number"),
        ({"models": {"alpha": {"dir": "out/alpha", "pattern": "{name}.png"}, "beta": "out/beta"}}, "`pattern` must be text"),
        ({"models": {"alpha": {"paths": ["a", "b"]}, "beta": "out/beta"}}, "`paths` must map item ids"),
    ):
        with pytest.raises(ConfigError, match=says):
            load_study(make_study(tmp_path / "u", extra=extra))
    twice = make_study(tmp_path / "v")
    twice.write_text(twice.read_text() + "items: []\n")
    with pytest.raises(DataError, match=r"study.yaml:\d+: not valid YAML \(key 'items' given twice"):
        load_study(twice)
    nul = make_study(tmp_path / "w", items={"k-1": "kubric", "k-2": "kubric"})
    nul.write_text(nul.read_text().replace("src/k-2.png", '"src/k-2.png\\0"'))  # YAML's escape for NUL
    assert [p.reason for p in load_study(nul).problems] == ["item 'k-2': path holds a NUL character: 'src/k-2.png\\x00'"]


def test_an_image_removed_while_serving_is_a_404_and_a_hand_edited_vote_is_skipped(app, study, tmp_path):
    a = client_for(app, "ann1")
    vote(a, "k-1", 0, 1)
    vote(a, "s-1", 0, 1)
    study.item("k-1").source.unlink()
    r = a.get("/image/k-1/source")
    assert r.status_code == 404 and "no longer on the server" in r.text
    db = tmp_path / "votes.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE votes SET shown = ? WHERE item_id = 's-1'", ('["alpha", "be',))
    store = VoteStore(db, study.name)
    assert [v.item_id for v in store.votes()] == ["k-1"] and store.unreadable == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "http://evil.example/page"},
        {},
    ],
)
def test_cross_origin_state_changes_are_refused(app, tmp_path, headers):
    friend = client_for(app, "ann1")
    cookies = dict(friend.cookies)
    stranger = TestClient(app, follow_redirects=False, cookies=cookies)
    assert stranger.post("/login", data={"annotator": "x"}, headers=headers).status_code == 403
    r = stranger.post("/item/k-1/vote", data={"best": "0", "worst": "1"}, headers=headers)
    assert r.status_code == 403 and "cross-origin" in r.text
    assert VoteStore(tmp_path / "votes.sqlite", "api-study").votes() == []
    # Reading stays possible; a same-origin Referer is enough when Origin is absent.
    assert stranger.get("/item/k-1").status_code == 200
    ok = stranger.post(
        "/item/k-1/vote", data={"best": "0", "worst": "1"}, headers={"Referer": "http://testserver/item/k-1"}
    )
    assert ok.status_code == 303


def test_same_origin_rules():
    assert same_origin({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"})
    assert not same_origin({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8001"})
    assert not same_origin({"host": "127.0.0.1:8000", "origin": "http://localhost:8000"})
    assert not same_origin({"host": "127.0.0.1:8000", "referer": "javascript://127.0.0.1:8000"})
    assert not same_origin({"origin": "http://127.0.0.1:8000"})


def test_loopback_server_refuses_foreign_host_names(study, tmp_path):
    app = create_app(study, tmp_path / "v.sqlite", allowed_hosts=LOOPBACK_HOSTS)
    good = TestClient(app, base_url="http://127.0.0.1:8000")
    assert good.get("/").status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example:8000")
    assert rebound.get("/").status_code == 400


def test_security_headers_and_play_off(app):
    client = client_for(app, "ann1")
    r = client.get("/item/k-1")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert 'href="/static/style.css"' in r.text and "://" not in r.text  # nothing from elsewhere
    assert client.get("/static/style.css").status_code == 200
    r = client.get("/play")
    assert r.status_code == 404 and "--world" in r.text
    assert client.post("/play", data={"action": "x"}).status_code == 404


# -- interactive prediction with the tiny random model -------------------------------------------


def _upload(fmt: str = "PNG", size: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def play_app(world):
    from worldboot.web.play import Predictor

    predictor = Predictor(world, verifier=world, num_samples=3, seed=7)
    return create_app(predictor=predictor, max_upload_bytes=64 * 1024), predictor


def test_play_rollout_ranked_by_verifier(play_app, world):
    app, predictor = play_app
    client = TestClient(app, headers=ORIGIN, follow_redirects=False)
    assert client.get("/").headers["location"] == "/play"
    page = client.get("/play")
    assert page.status_code == 200 and 'type="file"' in page.text
    r = client.post(
        "/play",
        files={"image": ("x.bin", _upload("WEBP"), "application/octet-stream")},
        data={"action": "move left", "n": "3"},
    )
    assert r.status_code == 303
    rollout_id = r.headers["location"].rsplit("/", 1)[1]
    page = client.get(f"/play/{rollout_id}")
    assert page.status_code == 200 and page.text.count('name="choice"') == 3 and "log p = " in page.text
    step = predictor.get(rollout_id).steps[0]
    scores = [c.score for c in step.candidates]
    assert scores == sorted(scores, reverse=True)
    # The scores are the verifier's log p(action | source, candidate), recomputed here.
    again = world.score(
        [world.dynamics_example(step.source_codes, c.codes, "move left") for c in step.candidates]
    ).total
    # totals of one-signed log-probabilities (they bound their terms), scored in another batch
    assert np.allclose(again.numpy(), scores, atol=f32_atol(np.abs(scores).max()), rtol=0)
    for k in range(3):
        img = Image.open(io.BytesIO(client.get(f"/play/{rollout_id}/0/{k}.png").content))
        assert img.size == (world.image_size, world.image_size)
    # Continue from candidate 1 with a next action.
    chosen = client.get(f"/play/{rollout_id}/0/1.png").content
    r = client.post(f"/play/{rollout_id}/step", data={"choice": "1", "action": "now up", "n": "2"})
    assert r.status_code == 303
    rollout = predictor.get(rollout_id)
    assert len(rollout.steps) == 2 and rollout.steps[0].chosen == 1 and len(rollout.steps[1].candidates) == 2
    assert client.get(f"/play/{rollout_id}/1/source.png").content == chosen
    assert "chosen" in client.get(f"/play/{rollout_id}").text
    assert client.post(f"/play/{rollout_id}/step", data={"choice": "9", "action": "a"}).status_code == 400
    assert client.get(f"/play/{rollout_id}/1/5.png").status_code == 404
    assert client.get("/play/unknown-rollout").status_code == 404


@pytest.mark.parametrize("bad", ["\u00b2", "-1", "0", "three", "1.5", "99"])
def test_form_numbers_are_checked_by_their_types_and_bounds(play_app, bad, caplog):
    """A number of candidates or a choice that is not a whole number in range is a 400 page
    naming the field, never a 500 (``str.isdigit()`` accepts "\u00b2", which ``int()`` refuses)."""
    app, predictor = play_app
    client = TestClient(app, headers=ORIGIN, follow_redirects=False, raise_server_exceptions=False)
    r = client.post("/play", files={"image": ("a.png", _upload(), "image/png")}, data={"action": "go", "n": bad})
    assert r.status_code == 400 and 'type="file"' in r.text, r.text[:300]
    assert "n:" in r.text or "between 1 and" in r.text
    assert len(predictor._rollouts) == 0
    r = client.post("/play", files={"image": ("a.png", _upload(), "image/png")}, data={"action": "go", "n": "2"})
    rollout_id = r.headers["location"].rsplit("/", 1)[1]
    r = client.post(f"/play/{rollout_id}/step", data={"choice": bad, "action": "a"})
    if bad == "0":  # the first candidate: a valid choice
        assert r.status_code == 303
    else:
        assert r.status_code == 400 and "Traceback" not in r.text
        assert len(predictor.get(rollout_id).steps) == 1
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("name", "payload", "status", "message"),
    [
        ("a.gif", "GIF", 400, "GIF images are not accepted"),
        ("a.png", "text", 400, "not a readable"),
        ("a.png", "big", 400, "larger than 64 KB"),
        ("a.png", "huge", 413, "Too Large"),
        ("a.png", "empty", 400, "no image uploaded"),
    ],
)
def test_uploads_are_checked_by_content_and_size(play_app, name, payload, status, message):
    app, predictor = play_app
    client = TestClient(app, headers=ORIGIN, follow_redirects=False)
    data = {
        "GIF": _upload("GIF"),
        "text": b"#!/bin/sh\necho this is not an image\n",
        "big": _upload("PNG", size=256),  # ~190 KB of noise: over the 64 KB upload limit
        "huge": _upload("PNG", size=400),  # ~470 KB: over the body limit (upload + form overhead)
        "empty": b"",
    }[payload]
    r = client.post("/play", files={"image": (name, data, "image/png")}, data={"action": "go"})
    assert r.status_code == status and message in r.text
    assert len(predictor._rollouts) == 0
    # Cross-origin uploads are refused too.
    r = client.post(
        "/play",
        files={"image": ("a.png", _upload(), "image/png")},
        data={"action": "go"},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403


def test_streamed_body_without_length_is_cut_off(app):
    # A chunked body has no Content-Length: the limit must hold while it streams in.
    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    client = client_for(app, "ann1")
    r = client.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_shipped_example_study_loads_and_serves(tmp_path):
    path = Path(__file__).resolve().parents[2] / "configs" / "web" / "example_study.yaml"
    study = load_study(path, strict=True)
    assert study.models == ["system-a", "system-b", "system-c"] and study.reference == "system-b"
    assert [i.subset for i in study.items] == ["blocks", "blocks", "table"]
    client = client_for(create_app(study, tmp_path / "v.sqlite"), "ann1")
    assert client.get("/next").headers["location"] == "/item/move-red-left"
    assert vote(client, "move-red-left", 0, 1).status_code == 303


def test_serve_command_wires_study_models_and_hosts(tmp_path, tiny_dir, monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    study_path = make_study(tmp_path / "s")
    db = tmp_path / "v.sqlite"
    args = ["serve", "--study", str(study_path), "--db", str(db), "--port", "8123"]
    assert main([*args, "--world", str(tiny_dir), "--verifier", str(tiny_dir), "--samples", "2"]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    app = served["app"]
    assert app.state.web.predictor.num_samples == 2 and app.state.web.predictor.verifier is not None
    local = TestClient(app, base_url="http://127.0.0.1:8123")
    assert local.get("/").status_code == 200 and local.get("/play").status_code == 200
    # Bound to loopback, the server answers to loopback names only (DNS rebinding).
    assert TestClient(app, base_url="http://rebound.example:8123").get("/").status_code == 400
    assert db.is_file()
    # Beyond loopback, a warning and (unless --allow-host) any Host name.
    assert main([*args, "--host", "0.0.0.0"]) == 0
    assert TestClient(served["app"], base_url="http://lab-machine:8123").get("/").status_code == 200
    assert main([*args, "--host", "0.0.0.0", "--allow-host", "lab-machine"]) == 0
    assert TestClient(served["app"], base_url="http://other:8123").get("/").status_code == 400


def test_serve_command_arguments(tmp_path):
    assert main(["serve"]) == 2
    assert main(["serve", "--verifier", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
