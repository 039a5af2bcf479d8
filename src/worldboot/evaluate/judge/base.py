"""The judge's interface: the paper's prompt (Appendix H), a request, a verdict, token usage, and the config that chooses a judge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from worldboot.bounds import bounded
from worldboot.errors import ConfigError

#: The paper's Appendix H prompt, verbatim (``{instruction}`` is the action; the doubled braces
#: are the paper's own format-string escapes and render as single braces).
JUDGE_PROMPT = """You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated image(s) based on the given rules.

You will have to give your output in a valid way of a Python dictionary format (Keep your reasoning concise and short.):

{{"score": [...], "reasoning": "..." }}

and don’t output anything else. Two images will be provided:
• The first being the original AI-generated image
• The second being an edited version of the first.

The objective is to evaluate how successfully the editing instruction has been executed in the second image. Note that sometimes the two images might look identical due to a failure in image editing. From a scale of 0 to 10:

• A score from 0 to 10 will be given based on the success of the editing.
– 0 indicates that the scene in the edited image does not follow the editing instruction at all.
– 10 indicates that the scene in the edited image follows the editing instruction text perfectly.
– If the object in the instruction is not present in the original image at all, the score will be 0.
• A second score from 0 to 10 will rate the degree of minimal editing in the second image.
– 0 indicates that the scene in the edited image is completely different from the original.
– 10 indicates that the edited image can be recognised as a minimally edited yet effective version of the original.

Put the score in a list such that: output score = [score1, score2], where score1 evaluates the editing success and score2 evaluates the degree of the minimal editing.
Editing instruction: {instruction}"""

#: Bump when the request format changes in a way that changes replies (part of the cache key).
REQUEST_FORMAT = "v1:text,source,prediction:png"


def build_prompt(action: str) -> str:
    """The judge prompt for one action."""
    return JUDGE_PROMPT.format(instruction=action)


@dataclass
class JudgeConfig:
    """Which judge scores predictions, and how the OpenAI-compatible one is called.

    Attributes:
        type: ``openai`` (GPT-4o-as-a-judge on any OpenAI-compatible server), ``world`` (the
            procedural world's exact judge; only for its own benchmarks) or ``none``.
        model: Model name sent to the server; the paper used ``gpt-4o-2024-11-20``.
        base_url: Server URL (e.g. ``http://localhost:8000/v1`` for vLLM); None uses the
            client's default (``OPENAI_BASE_URL`` or api.openai.com).
        api_key_env: Name of the environment variable that holds the key.
        temperature: 0 as in the paper: the verdict should not depend on luck.
        max_tokens: Upper bound on the reply; the reasoning is asked to be short.
        timeout: Seconds per request before it counts as timed out (and is retried).
        max_retries: Retries of the ``openai`` client on 429, 5xx, connection errors and
            time-outs, with exponential back-off.
        concurrency: Requests in flight at once (threads).
        cache: SQLite file of paid replies; empty means ``<report dir>/judge_cache.sqlite``.
        price_input_per_1m: Price of 1M prompt tokens, for the cost tally (gpt-4o list price).
        price_output_per_1m: Price of 1M completion tokens.
        max_image_side: Downscale images whose longer side exceeds this before sending (0 = send
            as they are); fewer image tokens, lower cost.
        retry_unparsable: Ask again, on a rerun, for cached replies that could not be parsed
            (off by default: at temperature 0 the same reply comes back, and it was paid once).
    """

    type: Literal["openai", "world", "none"] = "openai"
    model: str = "gpt-4o-2024-11-20"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = bounded(0.0, ge=0, le=2)
    max_tokens: int = bounded(512, ge=1)
    timeout: float = bounded(120.0, gt=0)
    max_retries: int = bounded(6, ge=0)
    concurrency: int = bounded(4, ge=1)
    cache: str = ""
    price_input_per_1m: float = bounded(2.50, ge=0)
    price_output_per_1m: float = bounded(10.00, ge=0)
    max_image_side: int = bounded(0, ge=0)
    retry_unparsable: bool = False

    def __post_init__(self) -> None:
        if self.type == "openai" and not self.model.strip():
            raise ConfigError("config key 'judge.model': name the judge model (e.g. gpt-4o-2024-11-20)")
        if self.base_url is not None and self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"config key 'judge.base_url': an http(s) URL, got {self.base_url!r}")


@dataclass
class JudgeRequest:
    """One prediction to judge.

    Attributes:
        source: Path of the source observation.
        action: The action (the prompt's editing instruction).
        prediction: Path of the predicted observation.
        triplet: The sample, for judges that read its metadata (the procedural world's judge
            takes the true scenes from ``meta``); the OpenAI judge ignores it.
    """

    source: str
    action: str
    prediction: str
    triplet: Any = None


@dataclass
class Verdict:
    """A judge's answer for one request.

    Attributes:
        editing_success: ES, 0-10 (None when the judge failed).
        minimal_editing: ME, 0-10.
        score: ``min(ES, ME)``.
        reasoning: The judge's short reasoning, when it gives one.
        error: Why there is no score (API down, unparsable reply, unreadable image).
        raw: The reply text as received (kept for unparsable replies).
        cached: True when the reply came from the cache (nothing paid).
        prompt_tokens: Prompt tokens of the paid call (0 when cached).
        completion_tokens: Completion tokens of the paid call.
        details: Judge-specific extras (the world judge's per-object findings).
    """

    editing_success: float | None = None
    minimal_editing: float | None = None
    score: float | None = None
    reasoning: str | None = None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the verdict holds a score."""
        return self.score is not None

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results.jsonl``."""
        out = asdict(self)
        if out["error"] is None:
            out.pop("raw")  # the parsed fields say it all; keep raw text only for failures
        return out


@dataclass
class Usage:
    """Token and cost tally of a judge over a run."""

    requests: int = 0
    paid_calls: int = 0
    cached: int = 0
    failures: int = 0
    unparsable: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0

    @property
    def cost(self) -> float:
        """Money spent by the paid calls, at the configured prices."""
        return (
            self.prompt_tokens * self.price_input_per_1m + self.completion_tokens * self.price_output_per_1m
        ) / 1e6

    def to_json(self) -> dict[str, Any]:
        """Plain data, with the cost."""
        return {**asdict(self), "cost": round(self.cost, 6)}


class Judge(Protocol):
    """Anything that turns requests into verdicts."""

    name: str
    usage: Usage

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        """One verdict per request, in order; failures are verdicts with ``error`` set."""
        ...
