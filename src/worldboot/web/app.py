"""The web app: blind best/worst voting (the paper's human evaluation) and interactive prediction.

Routes (HTML forms, no JavaScript needed):

* ``/`` login (an annotator id), ``/next`` the annotator's first unvoted item, ``/item/{id}``
  one item (source, action, the models' outputs in a per-annotator order with names hidden),
  ``POST /item/{id}/vote``, ``/done``, ``/export.csv``;
* ``/image/{id}/source`` and ``/image/{id}/{slot}``: images by item id and the slot shown to the
  annotator; no route takes a path;
* ``/play``: upload an image, type an action, see N candidates of the world model ranked by
  the dynamics model, continue from one (only with a world model).

Safety: state-changing requests must come from the same origin (``Origin`` or ``Referer``
against ``Host``, else 403); request bodies are capped (413); uploads are checked by decoding them;
``allowed_hosts`` guards a loopback server against DNS rebinding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from worldboot.errors import DataError
from worldboot.study.spec import Study, StudyItem, validate_annotator
from worldboot.study.votes import VoteStore
from worldboot.web.play import Predictor, png_bytes, read_upload

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
    app.state.study, app.state.store, app.state.predictor = study, store, predictor

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

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("title", study.title if study else "worldboot")
        context.setdefault("annotator", current_annotator(request))
        context.update(has_study=study is not None, has_play=predictor is not None)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.endswith((".png", ".csv")) or request.url.path.startswith("/image/"):
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return page(
            request, "message.html", exc.status_code, heading=f"Error {exc.status_code}", message=exc.detail
        )

    def current_annotator(request: Request) -> str | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            return validate_annotator(raw)
        except DataError:
            return None

    def need_study() -> Study:
        if study is None:
            raise HTTPException(404, "No study is loaded: start `worldboot serve --study STUDY.yaml`.")
        return study

    def need_annotator(request: Request) -> str:
        annotator = current_annotator(request)
        if annotator is None:
            raise HTTPException(401, "Log in with your annotator id first.")
        return annotator

    def need_item(item_id: str) -> StudyItem:
        item = need_study().item(item_id)
        if item is None:
            raise HTTPException(404, "No such item in this study.")
        return item

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    def next_unvoted(annotator: str, after: str | None = None) -> StudyItem | None:
        """The first unvoted item after ``after`` in the annotator's order, wrapping around."""
        order = need_study().annotator_items(annotator)
        voted = store.voted_items(annotator)
        start = next((i + 1 for i, it in enumerate(order) if it.id == after), 0)
        for item in order[start:] + order[:start]:
            if item.id not in voted:
                return item
        return None

    # -- study ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        if study is None:
            return redirect("/play")
        if current_annotator(request):
            return redirect("/next")
        return page(request, "login.html", study=study, n_items=len(study.items))

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, annotator: Annotated[str, Form()] = "") -> Response:
        need_study()
        try:
            annotator = validate_annotator(annotator)
        except DataError as err:
            return page(request, "login.html", 400, study=study, n_items=len(study.items), error=str(err))
        response = redirect("/next")
        response.set_cookie(COOKIE, annotator, httponly=True, samesite="lax", max_age=90 * 86400)
        return response

    @app.post("/logout")
    def logout() -> Response:
        response = redirect("/")
        response.delete_cookie(COOKIE)
        return response

    @app.get("/next")
    def next_item(request: Request) -> Response:
        need_study()
        annotator = current_annotator(request)
        if annotator is None:
            return redirect("/")
        item = next_unvoted(annotator)
        return redirect(f"/item/{item.id}" if item else "/done")

    def item_page(
        request: Request, item: StudyItem, annotator: str, status_code: int = 200, error: str = ""
    ) -> Response:
        order = study.annotator_items(annotator)
        voted = store.voted_items(annotator)
        position = next(i for i, it in enumerate(order) if it.id == item.id)
        shown = study.shown_order(annotator, item.id)
        previous = voted.get(item.id)
        return page(
            request,
            "item.html",
            status_code,
            item=item,
            position=position + 1,
            n_items=len(order),
            n_voted=len(voted),
            slots=range(len(shown)),
            best=shown.index(previous.best) if previous and previous.best in shown else None,
            worst=shown.index(previous.worst) if previous and previous.worst in shown else None,
            prev_id=order[position - 1].id if position > 0 else None,
            next_id=order[position + 1].id if position + 1 < len(order) else None,
            error=error,
        )

    @app.get("/item/{item_id}", response_class=HTMLResponse)
    def show_item(request: Request, item_id: str) -> Response:
        item = need_item(item_id)
        annotator = current_annotator(request)
        if annotator is None:
            return redirect("/")
        return item_page(request, item, annotator)

    @app.post("/item/{item_id}/vote", response_class=HTMLResponse)
    def vote(
        request: Request, item_id: str, best: Annotated[str, Form()] = "", worst: Annotated[str, Form()] = ""
    ) -> Response:
        item = need_item(item_id)
        annotator = need_annotator(request)
        shown = study.shown_order(annotator, item.id)
        slots = {str(i): name for i, name in enumerate(shown)}
        if best not in slots or worst not in slots:
            return item_page(
                request, item, annotator, 400, "Mark one output as the best and one as the worst."
            )
        if best == worst:
            return item_page(
                request, item, annotator, 400, "The best and the worst must be different outputs."
            )
        store.record(annotator, item.id, slots[best], slots[worst], shown)
        following = next_unvoted(annotator, after=item.id)
        return redirect(f"/item/{following.id}" if following else "/done")

    @app.get("/image/{item_id}/source")
    def source_image(request: Request, item_id: str) -> Response:
        item = need_item(item_id)
        need_annotator(request)
        return FileResponse(item.source, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/image/{item_id}/{slot}")
    def output_image(request: Request, item_id: str, slot: int) -> Response:
        item = need_item(item_id)
        annotator = need_annotator(request)
        shown = study.shown_order(annotator, item.id)
        if not 0 <= slot < len(shown):
            raise HTTPException(404, "No such output.")
        # The same URL shows another model to another annotator: never cache it.
        return FileResponse(item.outputs[shown[slot]], headers={"Cache-Control": "no-store"})

    @app.get("/done", response_class=HTMLResponse)
    def done(request: Request) -> Response:
        need_study()
        annotator = current_annotator(request)
        if annotator is None:
            return redirect("/")
        order = study.annotator_items(annotator)
        voted = store.voted_items(annotator)
        return page(request, "done.html", items=order, voted=voted, n_items=len(order), n_voted=len(voted))

    @app.get("/export.csv")
    def export_csv() -> Response:
        need_study()
        return Response(
            store.csv_text(study),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{study.name}-votes.csv"'},
        )

    # -- interactive prediction -------------------------------------------------------------

    def need_predictor() -> Predictor:
        if predictor is None:
            raise HTTPException(
                404,
                "Interactive prediction is off: start `worldboot serve --world MODEL_DIR [--verifier MODEL_DIR]`.",
            )
        return predictor

    def need_rollout(rollout_id: str):
        rollout = need_predictor().get(rollout_id)
        if rollout is None:
            raise HTTPException(404, "This rollout has expired; start a new one.")
        return rollout

    def parse_n(text: str) -> int | None:
        if not text.strip():
            return None
        if not text.strip().isdigit():
            raise DataError("the number of candidates must be a whole number")
        return int(text)

    def play_page(
        request: Request, rollout=None, status_code: int = 200, error: str = "", action: str = ""
    ) -> Response:
        p = need_predictor()
        return page(
            request,
            "play.html",
            status_code,
            title="Interactive prediction",
            rollout=rollout,
            error=error,
            action=action,
            num_samples=p.num_samples,
            max_samples=p.max_samples,
            ranked=p.verifier is not None,
            max_mb=max_upload_bytes // 2**20,
        )

    @app.get("/play", response_class=HTMLResponse)
    def play(request: Request) -> Response:
        return play_page(request)

    @app.post("/play", response_class=HTMLResponse)
    def play_start(
        request: Request,
        image: Annotated[UploadFile | None, File()] = None,
        action: Annotated[str, Form()] = "",
        n: Annotated[str, Form()] = "",
    ) -> Response:
        p = need_predictor()
        try:
            if image is None:
                raise DataError("choose an image to upload")
            picture = read_upload(image.file.read(max_upload_bytes + 1), max_upload_bytes)
            rollout = p.start(picture, action, parse_n(n))
        except DataError as err:
            return play_page(request, status_code=400, error=str(err), action=action)
        return redirect(f"/play/{rollout.id}")

    @app.get("/play/{rollout_id}", response_class=HTMLResponse)
    def play_rollout(request: Request, rollout_id: str) -> Response:
        return play_page(request, need_rollout(rollout_id))

    @app.post("/play/{rollout_id}/step", response_class=HTMLResponse)
    def play_step(
        request: Request,
        rollout_id: str,
        choice: Annotated[str, Form()] = "",
        action: Annotated[str, Form()] = "",
        n: Annotated[str, Form()] = "",
    ) -> Response:
        p = need_predictor()
        rollout = need_rollout(rollout_id)
        try:
            if not choice.isdigit():
                raise DataError("choose the candidate to continue from")
            p.step(rollout_id, int(choice), action, parse_n(n))
        except DataError as err:
            return play_page(request, rollout, 400, str(err), action)
        return redirect(f"/play/{rollout_id}#step-{len(rollout.steps)}")

    @app.get("/play/{rollout_id}/{step}/source.png")
    def play_source(rollout_id: str, step: int) -> Response:
        rollout = need_rollout(rollout_id)
        if not 0 <= step < len(rollout.steps):
            raise HTTPException(404, "No such step.")
        return Response(png_bytes(rollout.steps[step].source_image), media_type="image/png")

    @app.get("/play/{rollout_id}/{step}/{k}.png")
    def play_candidate(rollout_id: str, step: int, k: int) -> Response:
        rollout = need_rollout(rollout_id)
        if not 0 <= step < len(rollout.steps) or not 0 <= k < len(rollout.steps[step].candidates):
            raise HTTPException(404, "No such candidate.")
        return Response(png_bytes(rollout.steps[step].candidates[k].image), media_type="image/png")

    return app
