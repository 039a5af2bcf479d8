"""The blind study's routes: login, one item at a time, votes, images by slot.

The votes name the models, so they leave the server only through ``worldboot serve --export``
(the organiser's command), never through a route an annotator could open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

from worldboot.errors import DataError
from worldboot.study.spec import Study, StudyItem, validate_annotator
from worldboot.web.common import COOKIE, current_annotator, page, redirect, web_state

router = APIRouter()


def need_study(request: Request) -> Study:
    study = web_state(request).study
    if study is None:
        raise HTTPException(404, "No study is loaded: start `worldboot serve --study STUDY.yaml`.")
    return study


def need_annotator(request: Request) -> str:
    annotator = current_annotator(request)
    if annotator is None:
        raise HTTPException(401, "Log in with your annotator id first.")
    return annotator


def need_item(request: Request, item_id: str) -> StudyItem:
    item = need_study(request).item(item_id)
    if item is None:
        raise HTTPException(404, "No such item in this study.")
    return item


def next_unvoted(request: Request, annotator: str, after: str | None = None) -> StudyItem | None:
    """The first unvoted item after ``after`` in the annotator's order, wrapping around."""
    order = need_study(request).annotator_items(annotator)
    voted = web_state(request).store.voted_items(annotator)
    start = next((i + 1 for i, it in enumerate(order) if it.id == after), 0)
    for item in order[start:] + order[:start]:
        if item.id not in voted:
            return item
    return None


def item_page(request: Request, item: StudyItem, annotator: str, status_code: int = 200, error: str = "") -> Response:
    web = web_state(request)
    order = web.study.annotator_items(annotator)
    voted = web.store.voted_items(annotator)
    position = next(i for i, it in enumerate(order) if it.id == item.id)
    shown = web.study.shown_order(annotator, item.id)
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


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    study = web_state(request).study
    if study is None:
        return redirect("/play")
    if current_annotator(request):
        return redirect("/next")
    return page(request, "login.html", study=study, n_items=len(study.items))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, annotator: Annotated[str, Form()] = "") -> Response:
    study = need_study(request)
    try:
        annotator = validate_annotator(annotator)
    except DataError as err:
        return page(request, "login.html", 400, study=study, n_items=len(study.items), error=str(err))
    response = redirect("/next")
    response.set_cookie(COOKIE, annotator, httponly=True, samesite="lax", max_age=90 * 86400)
    return response


@router.post("/logout")
def logout() -> Response:
    response = redirect("/")
    response.delete_cookie(COOKIE)
    return response


@router.get("/next")
def next_item(request: Request) -> Response:
    need_study(request)
    annotator = current_annotator(request)
    if annotator is None:
        return redirect("/")
    item = next_unvoted(request, annotator)
    return redirect(f"/item/{item.id}" if item else "/done")


@router.get("/item/{item_id}", response_class=HTMLResponse)
def show_item(request: Request, item_id: str) -> Response:
    item = need_item(request, item_id)
    annotator = current_annotator(request)
    if annotator is None:
        return redirect("/")
    return item_page(request, item, annotator)


@router.post("/item/{item_id}/vote", response_class=HTMLResponse)
def vote(
    request: Request, item_id: str, best: Annotated[str, Form()] = "", worst: Annotated[str, Form()] = ""
) -> Response:
    item = need_item(request, item_id)
    annotator = need_annotator(request)
    web = web_state(request)
    shown = web.study.shown_order(annotator, item.id)
    slots = {str(i): name for i, name in enumerate(shown)}
    if best not in slots or worst not in slots:
        return item_page(request, item, annotator, 400, "Mark one output as the best and one as the worst.")
    if best == worst:
        return item_page(request, item, annotator, 400, "The best and the worst must be different outputs.")
    web.store.record(annotator, item.id, slots[best], slots[worst], shown)
    following = next_unvoted(request, annotator, after=item.id)
    return redirect(f"/item/{following.id}" if following else "/done")


@router.get("/image/{item_id}/source")
def source_image(request: Request, item_id: str) -> Response:
    item = need_item(request, item_id)
    need_annotator(request)
    return _image(item.source, {"Cache-Control": "private, max-age=3600"})


@router.get("/image/{item_id}/{slot}")
def output_image(request: Request, item_id: str, slot: int) -> Response:
    item = need_item(request, item_id)
    annotator = need_annotator(request)
    shown = web_state(request).study.shown_order(annotator, item.id)
    if not 0 <= slot < len(shown):
        raise HTTPException(404, "No such output.")
    # The same URL shows another model to another annotator: never cache it.
    return _image(item.outputs[shown[slot]], {"Cache-Control": "no-store"})


def _image(path: Path, headers: dict[str, str]) -> Response:
    if not path.is_file():  # removed since the server started
        raise HTTPException(404, "This image is no longer on the server.")
    return FileResponse(path, headers=headers)


@router.get("/done", response_class=HTMLResponse)
def done(request: Request) -> Response:
    study = need_study(request)
    annotator = current_annotator(request)
    if annotator is None:
        return redirect("/")
    order = study.annotator_items(annotator)
    voted = web_state(request).store.voted_items(annotator)
    return page(request, "done.html", items=order, voted=voted, n_items=len(order), n_voted=len(voted))
