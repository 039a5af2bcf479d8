"""The web app: blind best/worst voting (the paper's human evaluation) and interactive prediction.

Routes (HTML forms, no JavaScript needed), one APIRouter per concern:

* :mod:`~worldboot.web.study_routes`: ``/`` login (an annotator id), ``/next`` the annotator's first unvoted item, ``/item/{id}``
  one item (source, action, the models' outputs in a per-annotator order with names hidden),
  ``POST /item/{id}/vote``, ``/done`` (the votes leave only by ``worldboot serve --export``);
* ``/image/{id}/source`` and ``/image/{id}/{slot}``: images by item id and the slot shown to the
  annotator; no route takes a path;
* :mod:`~worldboot.web.play_routes`: ``/play``: upload an image, type an action, see N candidates of the world model ranked by
  the dynamics model, continue from one (only with a world model).

A votes database moved or deleted while serving answers 503 with a page naming it (never a
traceback, never a new empty database in its place).

Safety: state-changing requests must come from the same origin (``Origin`` or ``Referer``
against ``Host``, else 403); request bodies are capped (413); uploads are checked by decoding them;
``allowed_hosts`` guards a loopback server against DNS rebinding.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from worldboot.study.spec import Study
from worldboot.study.votes import VoteStore, VotesUnavailable
from worldboot.web import play_routes, study_routes
from worldboot.web.common import (
    FORM_OVERHEAD,
    HERE,
    LOOPBACK_HOSTS,
    MAX_UPLOAD_BYTES,
    SAFE_METHODS,
    SECURITY_HEADERS,
    WebState,
    page,
    same_origin,
    slot_label,
)
from worldboot.web.play import Predictor

__all__ = ["LOOPBACK_HOSTS", "MAX_UPLOAD_BYTES", "create_app", "same_origin", "slot_label"]

logger = logging.getLogger(__name__)


def _form_error(exc: RequestValidationError) -> str:
    """One line for a form field FastAPI refused (``n: Input should be greater than or equal to 1``)."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err.get("loc", ())[1:]) or "form"
        parts.append(f"{field}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid form"


def _add_error_pages(app: FastAPI, predictor: Predictor | None) -> None:
    """Answer errors with a page (or plain text for an image): HTTP errors, a votes database
    gone while serving (503, in the log too; no traceback), and a form value FastAPI refused."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.endswith((".png", ".csv")) or request.url.path.startswith("/image/"):
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return page(
            request, "message.html", exc.status_code, heading=f"Error {exc.status_code}", message=exc.detail
        )

    @app.exception_handler(VotesUnavailable)
    async def votes_unavailable(request: Request, exc: VotesUnavailable) -> Response:
        # The database moved or deleted while serving: say so (in the log too), no traceback.
        logger.error("%s", exc)
        return page(request, "message.html", 503, heading="Votes database unavailable", message=str(exc))

    @app.exception_handler(RequestValidationError)
    async def form_error(request: Request, exc: RequestValidationError) -> Response:
        # A form number that is not one (or out of bounds): the form again with the reason, 400.
        message = _form_error(exc)
        if request.url.path.startswith("/play") and predictor is not None:
            rollout_id = request.path_params.get("rollout_id")
            rollout = predictor.get(rollout_id) if rollout_id else None
            return play_routes.play_page(request, rollout, 400, message)
        return page(request, "message.html", 400, heading="Error 400", message=message)


def create_app(
    study: Study | None = None,
    db_path: str | Path | None = None,
    predictor: Predictor | None = None,
    allowed_hosts: list[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """Build the app.

    Args:
        study: The blind study; None serves only ``/play``.
        db_path: The votes database (needed with a study).
        predictor: World model (+ verifier) for ``/play``; None turns it off.
        allowed_hosts: ``Host`` names accepted (None: any). ``worldboot serve`` passes the
            loopback names when it binds to loopback.
        max_upload_bytes: Largest accepted upload.

    Returns:
        The FastAPI application.
    """
    if study is None and predictor is None:
        raise ValueError("the app needs a study, a predictor, or both")
    if study is not None and db_path is None:
        raise ValueError("a study needs a votes database")
    store = VoteStore(db_path, study.name) if study is not None else None
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(slot_label=slot_label)
    app = FastAPI(
        title="worldboot",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Starlette's body limit refuses a too-large body (413) by Content-Length and while it
        # streams in, before the multipart parser spools it to disk.
        max_body_size=max_upload_bytes + FORM_OVERHEAD,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.web = WebState(study, store, predictor, templates, max_upload_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.method not in SAFE_METHODS and not same_origin(request.headers):
            response: Response = PlainTextResponse("cross-origin request refused", status_code=403)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    _add_error_pages(app, predictor)
    # Both always: a route of the part not served answers 404 with how to start it.
    app.include_router(study_routes.router)
    app.include_router(play_routes.router)
    return app
