"""End to end in a real headless Chromium: an annotator logs in and votes through a small study.

Debian's ``chromium`` (``scripts/install-browser.sh``) is driven by Playwright for Python; no
browser is downloaded. The server is the real app under uvicorn on a free loopback port.
"""

from __future__ import annotations

import contextlib
import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from worldboot.cli import main
from worldboot.study.spec import load_study
from worldboot.study.votes import VoteStore
from worldboot.web.app import LOOPBACK_HOSTS, create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODELS = ["copy", "mover", "wrong"]
ITEMS = [
    ("red-left", "blocks", "move the red box to the left"),
    ("blue-up", "blocks", "lift the blue box"),
    ("green-off", "table", "push the green box off the table"),
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/install-browser.sh)",
    ),
]


def _scene(color: tuple[int, int, int], x: int, y: int) -> Image.Image:
    img = Image.new("RGB", (128, 128), (226, 232, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 88, 128, 128], fill=(181, 140, 99))
    draw.rectangle([x - 12, y - 12, x + 12, y + 12], fill=color, outline=(20, 20, 20))
    return img


def make_study(root: Path) -> Path:
    colors = [(220, 38, 38), (37, 99, 235), (22, 163, 74)]
    for (item_id, _, _), color in zip(ITEMS, colors, strict=True):
        (root / "src").mkdir(parents=True, exist_ok=True)
        _scene(color, 64, 76).save(root / "src" / f"{item_id}.png")
        for model, (x, y) in zip(MODELS, [(64, 76), (30, 76), (100, 40)], strict=True):
            (root / model).mkdir(parents=True, exist_ok=True)
            _scene(color, x, y).save(root / model / f"{item_id}.jpg", quality=90)
    data = {
        "name": "browser-study",
        "title": "Which predicted next observation is best?",
        "items": [{"id": i, "subset": s, "source": f"src/{i}.png", "action": a} for i, s, a in ITEMS],
        "models": {m: m for m in MODELS},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """The app under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(sync_api, profile: Path) -> Iterator:
    """Debian's Chromium, headless, with an empty profile."""
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
        )
        ctx.set_default_timeout(60_000)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture()
def server(tmp_path):
    """The study app, configured as ``worldboot serve`` does on loopback."""
    study = load_study(make_study(tmp_path / "study"))
    db = tmp_path / "votes.sqlite"
    with serving(create_app(study, db, allowed_hosts=LOOPBACK_HOSTS)) as base:
        yield base, study, db


def test_annotator_votes_through_study_in_chromium(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, study, db = server
    shot = tmp_path / "item.png"
    with chromium(sync_api, tmp_path / "profile") as ctx:
        page = ctx.new_page()
        page.goto(base + "/")
        assert "Instructions" in page.content()
        page.get_by_label("Your annotator id").fill("alice")
        page.get_by_role("button", name="Start").click()
        page.wait_for_url(f"{base}/item/red-left")
        for k, (item_id, _, action) in enumerate(ITEMS):
            page.wait_for_url(f"{base}/item/{item_id}")
            assert page.get_by_role("heading", level=1).inner_text() == f"Item {k + 1} of 3"
            assert page.locator("#progress-text").inner_text() == f"{k} of 3 voted"
            assert page.locator(".action").first.inner_text() == action
            # Every image loaded (a broken route would leave naturalWidth at 0).
            widths = page.eval_on_selector_all("main img", "els => els.map(e => e.naturalWidth)")
            assert widths == [128, 128, 128, 128]
            best, worst = (
                page.get_by_role("group", name="Output A"),
                page.get_by_role("group", name="Output B"),
            )
            if k == 1:
                # One output cannot be both: choosing Worst on A clears Best on A (vote.js).
                best.get_by_label("Best").check()
                best.get_by_label("Worst").check()
                assert not best.get_by_label("Best").is_checked()
                page.get_by_role("group", name="Output C").get_by_label("Best").check()
                page.screenshot(path=str(shot), full_page=True)
            else:
                best.get_by_label("Best").check()
                worst.get_by_label("Worst").check()
            page.get_by_role("button", name="Submit vote").click()
        page.wait_for_url(f"{base}/done")
        assert "Thank you" in page.content() and "3 of 3" in page.content()

        # A returning annotator with this id goes straight to the overview.
        page.goto(base + "/next")
        page.wait_for_url(f"{base}/done")

        # A form on another origin (a data: URL sends Origin: null) cannot vote or log in.
        page.goto(
            "data:text/html,<form method=post action='"
            + base
            + "/item/red-left/vote'><input name=best value=2><input name=worst value=0>"
            "<button>go</button></form>"
        )
        with page.expect_response(f"{base}/item/red-left/vote") as answer:
            page.get_by_role("button", name="go").click()
        assert answer.value.status == 403

    votes = {v.item_id: v for v in VoteStore(db, study.name).votes()}
    assert sorted(votes) == sorted(i for i, _, _ in ITEMS)
    for item_id, _, _ in ITEMS:
        shown = study.shown_order("alice", item_id)
        expected = (shown[2], shown[0]) if item_id == "blue-up" else (shown[0], shown[1])
        assert (votes[item_id].annotator, votes[item_id].best, votes[item_id].worst) == ("alice", *expected)

    out = tmp_path / "votes.csv"
    assert main(["serve", "--study", str(study.path), "--db", str(db), "--export", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["annotator"], r["item_id"], r["best"]) for r in rows] == [
        ("alice", v.item_id, v.best) for v in VoteStore(db, study.name).votes()
    ]

    image = Image.open(shot)
    assert image.format == "PNG" and image.width >= 1000
    colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # a rendered page, not a blank one


def test_interactive_rollout_in_chromium(tiny_dir, tmp_path):
    """Upload an image, get ranked candidates from the tiny world model, continue from one."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from worldboot.models import load_backbone
    from worldboot.web.play import Predictor

    tiny = load_backbone(tiny_dir)
    predictor = Predictor(tiny, verifier=tiny, num_samples=2, seed=3)
    upload = tmp_path / "photo.jpg"
    _scene((220, 38, 38), 64, 76).save(upload, quality=90)
    shot = tmp_path / "play.png"
    app = create_app(predictor=predictor, allowed_hosts=LOOPBACK_HOSTS)
    with serving(app) as base, chromium(sync_api, tmp_path / "profile") as ctx:
        page = ctx.new_page()
        page.goto(base + "/")
        page.wait_for_url(f"{base}/play")
        page.get_by_label("Image (PNG, JPEG or WebP").set_input_files(str(upload))
        page.get_by_label("Action").fill("move the red box to the left")
        page.get_by_label("Number of candidates").fill("2")
        page.get_by_role("button", name="Predict").click()
        page.wait_for_selector("input[name=choice]")
        assert page.locator("input[name=choice]").count() == 2
        page.get_by_label("#2").check()
        page.get_by_label("Next action").fill("now lift it")
        page.get_by_role("button", name="Continue from the chosen candidate").click()
        page.wait_for_selector("#step-1 input[name=choice]")
        widths = page.eval_on_selector_all("main img", "els => els.map(e => e.naturalWidth)")
        # Step 1: the upload (128 px) and 2 candidates; step 2: the chosen one and 2 candidates.
        assert widths == [128, 64, 64, 64, 64, 64]
        page.screenshot(path=str(shot), full_page=True)
    [rollout] = predictor._rollouts.values()
    assert [s.action for s in rollout.steps] == ["move the red box to the left", "now lift it"]
    assert rollout.steps[0].chosen == 1
    assert shot.stat().st_size > 0
