"""Judges of next-observation predictions: GPT-4o-as-a-judge (any OpenAI-compatible server) and
the procedural world's own judge.

The OpenAI judge follows the paper's Appendix H: the prompt below verbatim, the source image then
the prediction, temperature 0, two scores ``[editing success, minimal editing]`` from 0 to 10,
and the sample score ``min(ES, ME)``. Around it:

* a SQLite cache keyed by model, prompt text, temperature and the hashes of the two images'
  pixels, so a rerun (or a killed run resumed) never pays for a verdict twice;
* retries with exponential back-off on 429, 5xx, connection errors and time-outs, done by the
  ``openai`` client itself (``max_retries``; it waits 0.5 s, 1 s, 2 s ... up to 8 s with jitter,
  or what a ``Retry-After`` header asks for);
* a server that cannot be reached stops the run in one line (:mod:`.reach`): the first request
  goes alone, and it or ``concurrency`` requests in a row failing to connect end the judging,
  with the replies already paid kept in the cache;
* a thread pool of ``concurrency`` requests;
* a parser that accepts JSON or Python-dict replies, in code fences or with text around them;
  an unparsable reply is kept with its text and counted as a failure, never scored 0;
* a token and cost tally.

The API key is read from the environment variable named by ``api_key_env`` and handed only to
the client: it is never logged, written, or kept in an error message.

Modules: :mod:`.base` (prompt, request, verdict, config), :mod:`.parse` (replies),
:mod:`.cache` (SQLite), :mod:`.openai_judge` (GPT-4o), :mod:`.world` (the procedural world),
:mod:`.factory` (:func:`make_judge`), :mod:`.reach` (is the server there).
"""

from worldboot.evaluate.judge.base import (
    JUDGE_PROMPT,
    REQUEST_FORMAT,
    Judge,
    JudgeConfig,
    JudgeRequest,
    Usage,
    Verdict,
    build_prompt,
)
from worldboot.evaluate.judge.cache import JudgeCache
from worldboot.evaluate.judge.factory import make_judge
from worldboot.evaluate.judge.openai_judge import OpenAIJudge, encode_image
from worldboot.evaluate.judge.parse import VerdictParseError, parse_verdict, verdict_from_reply
from worldboot.evaluate.judge.world import WorldJudge

__all__ = [
    "JUDGE_PROMPT",
    "REQUEST_FORMAT",
    "Judge",
    "JudgeCache",
    "JudgeConfig",
    "JudgeRequest",
    "OpenAIJudge",
    "Usage",
    "Verdict",
    "VerdictParseError",
    "WorldJudge",
    "build_prompt",
    "encode_image",
    "make_judge",
    "parse_verdict",
    "verdict_from_reply",
]
