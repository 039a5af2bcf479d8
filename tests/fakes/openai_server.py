"""A local OpenAI-compatible chat-completions server for tests, hit by the real ``openai`` client.

It runs ``http.server`` in a thread on 127.0.0.1 (a free port) and answers
``POST /v1/chat/completions``. Replies come from a script (consumed in order) and then from a
default behaviour; every request is recorded (body and headers) so tests can count calls and
check what was sent.

Script steps:

* :func:`reply` -- 200 with a chat completion whose content is the given text, and usage.
* :func:`error` -- an HTTP error status with an OpenAI-style error body (429, 500...).
* :func:`stall` -- wait before answering (longer than the client's time-out simulates one).

The default behaviour, :func:`identical_judge`, answers like a judge that sees whether the two
images are the same: ``[0, 10]`` for identical images (a copy edits nothing), ``[7, 8]``
otherwise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One scripted answer."""

    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 1000
    completion_tokens: int = 50
    body: bytes | None = None


def reply(content: str, prompt_tokens: int = 1000, completion_tokens: int = 50) -> Step:
    """A successful chat completion with ``content``."""
    return Step(content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Step:
    """An HTTP error with an OpenAI-style JSON body."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": status}}).encode()
    return Step(status=status, headers=headers or {}, body=body)


def stall(seconds: float, then: Step | None = None) -> Step:
    """Wait ``seconds`` before answering with ``then`` (default: a good verdict)."""
    step = then or reply('{"score": [5, 5], "reasoning": "late"}')
    step.delay = seconds
    return step


def image_urls(body: dict[str, Any]) -> list[str]:
    """The image data URLs of a chat-completions request, in order."""
    urls = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            urls += [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]
    return urls


def prompt_text(body: dict[str, Any]) -> str:
    """The text parts of a request, joined."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part["text"] for part in content if part.get("type") == "text"]
    return "\n".join(texts)


def identical_judge(body: dict[str, Any]) -> Step:
    """Score ``[0, 10]`` when the two images are identical, ``[7, 8]`` otherwise."""
    urls = image_urls(body)
    if len(urls) == 2 and urls[0] == urls[1]:
        return reply('{"score": [0, 10], "reasoning": "The two images are identical."}')
    return reply('{"score": [7, 8], "reasoning": "The edit follows the instruction."}')


class FakeOpenAI:
    """The server; use as a context manager. ``url`` is the ``base_url`` for the client.

    Attributes:
        requests: Every request received: ``{"path", "headers", "body"}``.
        script: Steps answered first, in order.
        default: Behaviour once the script is used up.
    """

    def __init__(self, default: Callable[[dict[str, Any]], Step] = identical_judge) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Step] = []
        self.default = default
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                with fake._lock:
                    fake.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    step = fake.script.pop(0) if fake.script else None
                if self.path.rstrip("/") != "/v1/chat/completions":
                    step = error(404, f"no route {self.path}")
                if step is None:
                    step = fake.default(body)
                if step.delay and fake._stop.wait(step.delay):
                    return
                if step.body is not None:
                    payload = step.body
                else:
                    payload = json.dumps(
                        {
                            "id": f"chatcmpl-{len(fake.requests)}",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "fake"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": step.content},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": step.prompt_tokens,
                                "completion_tokens": step.completion_tokens,
                                "total_tokens": step.prompt_tokens + step.completion_tokens,
                            },
                        }
                    ).encode()
                try:
                    self.send_response(step.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in step.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
