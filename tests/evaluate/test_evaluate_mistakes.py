"""``worldboot evaluate`` on mistakes it once hid: a judge server that cannot be reached (a table
of dashes after minutes, exit 0), predicted actions with ids not in the benchmark (dropped
uncounted) or of the wrong type (reported as missing)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from fakes.openai_server import FakeOpenAI
from helpers import square_triplets
from worldboot.cli import main
from worldboot.errors import ConfigError
from worldboot.evaluate.judge import JudgeCache, JudgeConfig, JudgeRequest, OpenAIJudge
from worldboot.evaluate.judge.reach import Reachability

KEY = "sk-test-SENTINEL-0123456789abcdef"


def _closed_port() -> str:
    """A base_url on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture()
def bench(tmp_path):
    """Six square triplets in two subsets, and an editor's predictions (the targets) by id."""
    triplets = square_triplets(tmp_path / "bench", 6, seed=3)
    editor = tmp_path / "editor"
    editor.mkdir()
    for t in triplets:
        shutil.copy(t.target, editor / f"{t.id}.png")
    return {"triplets": triplets, "manifest": tmp_path / "bench" / "manifest.jsonl", "editor": editor, "tmp": tmp_path}


def _evaluate(bench, url: str, *extra: str) -> int:
    return main(["evaluate", str(bench["editor"]), "--bench", str(bench["manifest"]), "--out", str(bench["tmp"] / "out"),
                 "--judge", "openai", "--judge.base-url", url, "judge.max_retries=0", "judge.timeout=5", *extra])


# -- a judge that cannot be reached ---------------------------------------------------------------


def test_unreachable_judge_stops_at_once_in_one_line_and_keeps_the_cache(bench, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cache = bench["tmp"] / "out" / "judge_cache.sqlite"
    with FakeOpenAI() as server:  # a first run judges one sample per subset (Copy and editor: 4 requests)
        assert _evaluate(bench, server.url, "--max-per-subset", "1") == 0
        assert server.count == 4
    capsys.readouterr()

    start = time.monotonic()
    assert _evaluate(bench, _closed_port()) == 2
    assert time.monotonic() - start < 10  # not every request's retries
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "the judge could not be reached at http://127.0.0.1:" in err[0], err
    assert "the first request failed to connect" in err[0] and "APIConnectionError" in err[0]
    assert f"the 4 judgment(s) in {cache} are kept" in err[0]
    assert "| editor |" not in captured.out  # no table of dashes
    assert len(JudgeCache(cache)) == 4
    assert json.loads((bench["tmp"] / "out" / "meta.json").read_text())["status"] == "failed: ConfigError"

    with FakeOpenAI() as server:  # the rerun asks only for the 12 - 4 requests not in the cache
        assert _evaluate(bench, server.url) == 0
        assert server.count == 8


def _completion(text: str) -> SimpleNamespace:
    message = SimpleNamespace(content=text, refusal=None)
    return SimpleNamespace(choices=[SimpleNamespace(message=message)],
                           usage=SimpleNamespace(prompt_tokens=10, completion_tokens=5))


class _DropsAfter:
    """An ``openai`` client stand-in whose server goes away after ``n`` answers."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **kwargs) -> SimpleNamespace:
        self.calls += 1
        if self.calls > self.n:
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions"))
        return _completion('{"score": [7, 8], "reasoning": "ok"}')


def test_a_server_that_goes_away_mid_run_stops_after_a_batch_in_a_row(tmp_path):
    from PIL import Image

    paths = []
    for i in range(13):
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(tmp_path / f"p{i}.png")
        paths.append(str(tmp_path / f"p{i}.png"))
    client = _DropsAfter(3)
    judge = OpenAIJudge(JudgeConfig(concurrency=2, max_retries=0), tmp_path / "c.sqlite", client=client)
    requests = [JudgeRequest(paths[0], "act", p) for p in paths[1:]]
    with pytest.raises(ConfigError, match=r"could not be reached at the client's default server: 2 requests in a row "
                                          r"failed to connect .* the 3 judgment\(s\) in .* are kept"):
        judge.judge_many(requests)
    assert client.calls < len(requests)  # stopped: the rest were never sent
    judge.close()
    assert len(JudgeCache(tmp_path / "c.sqlite")) == 3


def test_reachability_counts_streaks_and_any_answer_ends_one():
    reach = Reachability(stop_after=3, where="http://x/v1")
    reach.answered()
    for _ in range(2):
        reach.unreachable("APIConnectionError: Connection error.")
    reach.answered()  # a 500 or a reply: the server is there
    reach.unreachable("APIConnectionError: Connection error.")
    assert reach.halted is None and reach.error(0, 0, "c.sqlite") is None
    reach.unreachable("x")
    reach.unreachable("x")
    assert reach.halted and "3 requests in a row" in str(reach.error(1, 5, "c.sqlite"))
    first = Reachability(stop_after=4, where="http://x/v1")
    first.unreachable("APIConnectionError: Connection error.")  # nothing got through yet: stop at once
    assert "the first request failed to connect after 2 retries" in str(first.error(2, 0, "c.sqlite"))


# -- predicted actions ------------------------------------------------------------------------------


def _actions_bench(tmp_path: Path) -> tuple[list, Path, Path]:
    triplets = square_triplets(tmp_path / "bench", 4, seed=2)
    rows = [
        {"id": triplets[0].id, "action": triplets[0].action},
        {"id": "nope-9", "action": "move the cube"},
        {"id": triplets[1].id, "action": 7},
        {"id": triplets[2].id, "prediction": ["move", "left"]},
        {"id": triplets[3].id, "action": triplets[3].action},
    ]
    preds = tmp_path / "cdm.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return triplets, tmp_path / "bench" / "manifest.jsonl", preds


def test_unknown_ids_and_wrongly_typed_actions_are_counted_with_their_lines(tmp_path, capsys):
    _, manifest, preds = _actions_bench(tmp_path)
    out = tmp_path / "out"
    assert main(["evaluate", "actions", str(preds), "--bench", str(manifest), "--out", str(out), "--no-bertscore"]) == 0
    md = capsys.readouterr().out
    problems = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert sorted((p["line"], p["reason"].split(":")[0]) for p in problems) == [
        (2, "unknown id"), (3, "wrong type"), (4, "wrong type")]
    reasons = {p["line"]: p["reason"] for p in problems}
    assert "nope-9 is not in the benchmark" in reasons[2]
    assert reasons[3] == "wrong type: field 'action' must be a string, got int"
    assert reasons[4] == "wrong type: field 'prediction' must be a string, got list"
    assert f"cdm: 1 predicted actions have ids not in the benchmark (skipped; the first: {preds}:2" in md
    assert "3 input problems skipped (wrong type: 2, unknown id: 1)" in md
    assert "| cdm | 1.000 | 1.000 | 1.000 | 2/4 |" in md


def test_strict_actions_stop_at_the_wrong_type_naming_file_and_line(tmp_path, capsys):
    _, manifest, preds = _actions_bench(tmp_path)
    preds.write_text("".join(line + "\n" for line in preds.read_text().splitlines() if "nope-9" not in line))
    out = tmp_path / "out"
    assert main(["evaluate", "actions", str(preds), "--bench", str(manifest), "--out", str(out), "--no-bertscore",
                 "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"worldboot evaluate: error: {preds}:2: wrong type: field 'action' must be a string, got int"]
    assert not out.exists()


def test_actions_of_subsets_not_evaluated_are_noted_not_problems(tmp_path, capsys):
    triplets = square_triplets(tmp_path / "bench", 6, seed=3)
    preds = tmp_path / "cdm.jsonl"
    preds.write_text("".join(json.dumps({"id": t.id, "action": t.action}) + "\n" for t in triplets))
    out = tmp_path / "out"
    subset = triplets[0].subset
    others = sum(t.subset != subset for t in triplets)
    assert main(["evaluate", "actions", str(preds), "--bench", str(tmp_path / "bench" / "manifest.jsonl"), "--out",
                 str(out), "--no-bertscore", f"subsets=[{subset}]"]) == 0
    md = capsys.readouterr().out
    assert f"cdm: {others} predicted actions are of subsets not evaluated (left out)." in md
    assert not (out / "problems.jsonl").exists()
