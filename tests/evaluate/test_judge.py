"""The GPT-4o judge: the paper's prompt, reply parsing, and the real ``openai`` client against a
local fake server (retries, time-outs, failures, cache, cost, secrecy of the key)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes.openai_server import FakeOpenAI, error, image_urls, prompt_text, reply, stall
from worldboot.errors import ConfigError
from worldboot.evaluate.judge import (
    JUDGE_PROMPT,
    JudgeCache,
    JudgeConfig,
    JudgeRequest,
    OpenAIJudge,
    VerdictParseError,
    build_prompt,
    parse_verdict,
)

KEY = "sk-test-SENTINEL-0123456789abcdef"


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture()
def images(tmp_path):
    return [_image(tmp_path / f"img{i}.png", i) for i in range(4)]


def _judge(server: FakeOpenAI, tmp_path: Path, monkeypatch, **kw) -> OpenAIJudge:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = JudgeConfig(base_url=server.url, **{"max_retries": 2, "timeout": 5.0, "concurrency": 2, **kw})
    return OpenAIJudge(cfg, tmp_path / "cache.sqlite")


# -- prompt and parsing -------------------------------------------------------------------------


def test_prompt_matches_paper_appendix_h(paper_text):
    text = paper_text
    start = text.index("You are a professional digital artist.")
    end = text.index("Editing instruction: {instruction}", start) + len("Editing instruction: {instruction}")

    def words(s: str) -> str:
        return re.sub(r"\s+", "", s)

    assert words(JUDGE_PROMPT) == words(text[start:end])


def test_prompt_formats_action_and_braces():
    prompt = build_prompt("move the {red} cube left")
    assert prompt.endswith("Editing instruction: move the {red} cube left")
    assert '{"score": [...], "reasoning": "..." }' in prompt
    assert "{{" not in prompt


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"score": [7, 8], "reasoning": "good"}', (7.0, 8.0, "good")),
        ("{'score': [3, 9], 'reasoning': 'Python dict style'}", (3.0, 9.0, "Python dict style")),
        ('```json\n{"score": [2, 6], "reasoning": "fenced"}\n```', (2.0, 6.0, "fenced")),
        ('Here is my verdict:\n{"score": [10, 4.5], "reasoning": "a {brace} inside"}\nThanks!', (10.0, 4.5, "a {brace} inside")),
        ('{"score": ["5", "6"], "reasoning": "strings"}', (5.0, 6.0, "strings")),
        ('{"Score": [1, 2]}', (1.0, 2.0, None)),
        # cut off inside the reasoning: the score is still explicit
        ('{"score": [4, 7], "reasoning": "the cube moved but', (4.0, 7.0, None)),
        # an apostrophe breaks the Python literal; the pattern still finds both parts
        ("{'score': [6, 8], 'reasoning': 'it isn't moved'}", (6.0, 8.0, "it isn't moved")),
    ],
)
def test_parse_verdict_accepts(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "I cannot evaluate these images.", '{"score": [11, 3]}', '{"score": [1, 2, 3]}', '{"score": 7}',
     '{"reasoning": "no score"}', '{"score": [true, 5]}'],
)
def test_parse_verdict_rejects(text):
    with pytest.raises(VerdictParseError):
        parse_verdict(text)


# -- the client against the fake server -----------------------------------------------------------


def test_good_replies_and_request_format(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        judge = _judge(server, tmp_path, monkeypatch)
        reqs = [JudgeRequest(images[0], "move the cube", images[1]), JudgeRequest(images[2], "copy me", images[2])]
        verdicts = judge.judge_many(reqs)
        judge.close()
        assert server.count == 2
        by_action = {prompt_text(r["body"]).rsplit(": ", 1)[-1]: r for r in server.requests}
    first, copy = verdicts
    assert (first.editing_success, first.minimal_editing, first.score) == (7.0, 8.0, 7.0)
    assert (copy.editing_success, copy.minimal_editing, copy.score) == (0.0, 10.0, 0.0)
    req = by_action["move the cube"]
    body = req["body"]
    assert body["model"] == "gpt-4o-2024-11-20" and body["temperature"] == 0
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert prompt_text(body) == build_prompt("move the cube")
    # source first, then the prediction, as exact PNG data URLs of the pixels
    urls = image_urls(body)
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    for url, path in zip(urls, images[:2], strict=True):
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        assert np.array_equal(np.asarray(sent), np.asarray(Image.open(path).convert("RGB")))
    usage = judge.usage
    assert usage.paid_calls == 2 and usage.prompt_tokens == 2000 and usage.completion_tokens == 100
    assert usage.cost == pytest.approx((2000 * 2.5 + 100 * 10.0) / 1e6)


def test_malformed_reply_is_a_failure_not_zero(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        server.script = [reply("Sorry, I can't help with that.")]
        judge = _judge(server, tmp_path, monkeypatch)
        (v,) = judge.judge_many([JudgeRequest(images[0], "a", images[1])])
    assert v.score is None and v.editing_success is None
    assert v.error.startswith("unparsable reply") and v.raw == "Sorry, I can't help with that."
    assert judge.usage.unparsable == 1 and judge.usage.paid_calls == 1


def test_unparsable_cached_reply_is_asked_again_only_when_configured(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        server.script = [reply("no idea")]
        req = JudgeRequest(images[0], "a", images[1])
        assert _judge(server, tmp_path, monkeypatch).judge_many([req])[0].error.startswith("unparsable")
        (v,) = _judge(server, tmp_path, monkeypatch).judge_many([req])
        assert server.count == 1 and v.cached and v.score is None
        (v,) = _judge(server, tmp_path, monkeypatch, retry_unparsable=True).judge_many([req])
        assert server.count == 2 and v.score == 7.0 and not v.cached


def test_429_then_success_is_retried(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        # no Retry-After header: the client's own exponential back-off (about 0.5 s) applies
        server.script = [error(429, "rate limited")]
        judge = _judge(server, tmp_path, monkeypatch)
        (v,) = judge.judge_many([JudgeRequest(images[0], "a", images[1])])
        assert server.count == 2
    assert v.score == 7.0 and v.error is None


def test_500_then_success_and_persistent_500(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        server.script = [error(500, "boom", {"retry-after-ms": "10"})]
        judge = _judge(server, tmp_path, monkeypatch)
        (v,) = judge.judge_many([JudgeRequest(images[0], "a", images[1])])
        assert v.score == 7.0 and server.count == 2

        server.script = [error(503, "down", {"retry-after-ms": "10"}) for _ in range(3)]
        (v,) = judge.judge_many([JudgeRequest(images[2], "b", images[3])])
        assert server.count == 2 + 3  # one try and max_retries=2 retries
        assert v.score is None and v.error.startswith("judge unavailable: InternalServerError")
        assert judge.usage.failures == 1
        # a failure is not cached: the next run asks again
        (v,) = judge.judge_many([JudgeRequest(images[2], "b", images[3])])
        assert v.score == 7.0 and server.count == 6


def test_timeout_is_retried_then_reported(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        server.script = [stall(3.0)]
        judge = _judge(server, tmp_path, monkeypatch, timeout=0.3, max_retries=1)
        (v,) = judge.judge_many([JudgeRequest(images[0], "a", images[1])])
        assert v.score == 7.0 and server.count == 2

        server.script = [stall(3.0)]
        judge = _judge(server, tmp_path, monkeypatch, timeout=0.3, max_retries=0)
        (v,) = judge.judge_many([JudgeRequest(images[2], "b", images[3])])
        assert v.score is None and "APITimeoutError" in v.error


def test_cache_stops_second_call_and_dedupes(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        judge = _judge(server, tmp_path, monkeypatch)
        same = JudgeRequest(images[0], "move", images[1])
        first = judge.judge_many([same, same, JudgeRequest(images[0], "move", images[2])])
        judge.close()
        assert server.count == 2  # the duplicate was asked once
        assert [v.cached for v in first] == [False, True, False]

        again = _judge(server, tmp_path, monkeypatch)  # a new run on the same cache
        second = again.judge_many([same, JudgeRequest(images[0], "move", images[2])])
        again.close()
        assert server.count == 2
        assert all(v.cached for v in second) and [v.score for v in second] == [first[0].score, first[2].score]
        assert again.usage.paid_calls == 0 and again.usage.cost == 0.0

        # the key covers model and prompt: another model or action is a new call
        other = _judge(server, tmp_path, monkeypatch, model="another-model")
        other.judge_many([same, JudgeRequest(images[0], "another action", images[1])])
        assert server.count == 4
    assert len(JudgeCache(tmp_path / "cache.sqlite")) == 4


def test_same_pixels_other_file_hits_cache(tmp_path, monkeypatch, images):
    jpeg_free_copy = tmp_path / "copy.bmp"
    Image.open(images[1]).save(jpeg_free_copy)
    with FakeOpenAI() as server:
        judge = _judge(server, tmp_path, monkeypatch)
        judge.judge_many([JudgeRequest(images[0], "a", images[1])])
        (v,) = judge.judge_many([JudgeRequest(images[0], "a", str(jpeg_free_copy))])
        assert server.count == 1 and v.cached


def test_unreadable_image_is_a_per_sample_failure(tmp_path, monkeypatch, images):
    with FakeOpenAI() as server:
        judge = _judge(server, tmp_path, monkeypatch)
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not a png")
        verdicts = judge.judge_many([JudgeRequest(images[0], "a", str(bad)), JudgeRequest(images[0], "a", images[1])])
        assert server.count == 1
    assert verdicts[0].score is None and "broken.png" in verdicts[0].error
    assert verdicts[1].score == 7.0


def test_concurrency_answers_every_request_in_order(tmp_path, monkeypatch):
    paths = [_image(tmp_path / f"c{i}.png", 100 + i) for i in range(9)]
    with FakeOpenAI() as server:
        judge = _judge(server, tmp_path, monkeypatch, concurrency=4)
        reqs = [JudgeRequest(paths[0], f"action {i}", paths[i] if i % 2 else paths[0]) for i in range(1, 9)]
        verdicts = judge.judge_many(reqs)
        assert server.count == 8
    assert [v.score for v in verdicts] == [7.0 if i % 2 else 0.0 for i in range(1, 9)]


def test_missing_key_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_JUDGE_KEY"):
        OpenAIJudge(JudgeConfig(api_key_env="MY_JUDGE_KEY"), tmp_path / "c.sqlite")


def test_custom_key_variable_and_server_echo_is_scrubbed(tmp_path, monkeypatch, images):
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    with FakeOpenAI() as server:
        server.script = [error(401, f"Incorrect API key provided: {KEY}")]
        judge = OpenAIJudge(JudgeConfig(base_url=server.url, api_key_env="MY_JUDGE_KEY", max_retries=0), tmp_path / "c.sqlite")
        # A key the server refuses fails every request alike: the run stops at the first, in one line.
        with pytest.raises(ConfigError, match=r"AuthenticationError.*check \$MY_JUDGE_KEY") as err:
            judge.judge_many([JudgeRequest(images[0], "a", images[1])])
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(err.value) and KEY[-4:] not in str(err.value)


def _raw(payload):
    from fakes.openai_server import Step

    return Step(body=payload if isinstance(payload, bytes) else json.dumps(payload).encode())


def test_replies_of_any_shape_are_per_sample_failures_and_billed_tokens_count(tmp_path, monkeypatch, images):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    usage = {"prompt_tokens": 1000, "completion_tokens": 50}
    good = '{"score": [7, 8], "reasoning": "ok"}'
    with FakeOpenAI() as server:
        server.script = [
            _raw(b"<html>a web page, not the API</html>"),
            _raw({"choices": [{"index": 0}], "usage": usage}),
            _raw({"choices": [{"index": 0, "message": {"role": "assistant", "content": [{"type": "text", "text": good}]}}],
                  "usage": usage}),
            _raw({"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't"}}],
                  "usage": usage}),
            _raw({"choices": [], "usage": usage}),
            _raw({"choices": [{"index": 0, "message": {"role": "assistant", "content": good}}],
                  "usage": {"prompt_tokens": "lots", "completion_tokens": None}}),
            reply('Format: {"score": [...], "reasoning": "..."}\nAnswer: {"score": [6, 9], "reasoning": "x"}'),
        ]
        judge = OpenAIJudge(JudgeConfig(base_url=server.url, max_retries=0, concurrency=1), tmp_path / "c.sqlite")
        reqs = [JudgeRequest(images[0], f"action {i}", images[1]) for i in range(7)]
        verdicts = judge.judge_many(reqs)
    assert [v.score for v in verdicts] == [None, None, 7.0, None, None, 7.0, 6.0]
    assert verdicts[0].error.startswith("judge unavailable") and "refusal: I can't" in verdicts[3].raw
    assert "no choices" in verdicts[4].error
    # Billed: every reply the server answered with a completion (the empty one too); the one whose
    # usage is unreadable is paid for, with its tokens unknown.
    assert judge.usage.prompt_tokens == 5000 and judge.usage.paid_calls == 6


@pytest.mark.parametrize("status", [404, 403])
def test_a_wrong_model_or_forbidden_key_stops_the_run_in_one_line(tmp_path, monkeypatch, images, status):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI() as server:
        server.script = [error(status, "The model `gpt-5o` does not exist")] * 3
        judge = OpenAIJudge(JudgeConfig(base_url=server.url, model="gpt-5o", max_retries=0), tmp_path / "c.sqlite")
        with pytest.raises(ConfigError, match=r"judge.model \(gpt-5o\)"):
            judge.judge_many([JudgeRequest(images[0], "a", images[1])])
