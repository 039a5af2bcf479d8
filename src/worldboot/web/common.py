"""What every route of the web app shares: its state, the page renderer, the annotator's cookie."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from worldboot.errors import DataError
from worldboot.study.spec import Study, validate_annotator
from worldboot.study.votes import VoteStore
from worldboot.web.play import Predictor

HERE = Path(__file__).parent
COOKIE = "wb_annotator"
MAX_UPLOAD_BYTES = 8 * 2**20
#: Room for the multipart envelope and the text fields around an upload.
FORM_OVERHEAD = 256 * 2**10
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class WebState:
    """The app's state (``app.state.web``): the study and its votes, the predictor, the pages."""

    study: Study | None
    store: VoteStore | None
    predictor: Predictor | None
    templates: Jinja2Templates
    max_upload_bytes: int


def web_state(request: Request) -> WebState:
    """The :class:`WebState` of the app serving ``request``."""
    return request.app.state.web


def slot_label(slot: int) -> str:
    """``A``, ``B``, ... for slots 0, 1, ... (numbers past ``Z``)."""
    return chr(ord("A") + slot) if slot < 26 else str(slot + 1)


def same_origin(headers: Any) -> bool:
    """Whether a request's ``Origin`` (or, without one, ``Referer``) names the host it was sent to.

    Browsers send ``Origin`` on every cross-site POST, so a form on another site (or a page
    reached by DNS rebinding under another name) cannot vote or upload; a request with neither
    header is refused too.
    """
    host = (headers.get("host") or "").lower()
    source = headers.get("origin") or headers.get("referer")
    if not host or not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def current_annotator(request: Request) -> str | None:
    """The annotator id in the request's cookie, if it is a valid one."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        return validate_annotator(raw)
    except DataError:
        return None


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render template ``name`` with what every page shows."""
    web = web_state(request)
    context.setdefault("title", web.study.title if web.study else "worldboot")
    context.setdefault("annotator", current_annotator(request))
    context.update(has_study=web.study is not None, has_play=web.predictor is not None)
    return web.templates.TemplateResponse(request, name, context, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    """See other (303): after a form post, the browser GETs ``url``."""
    return RedirectResponse(url, status_code=303)
