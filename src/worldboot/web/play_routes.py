"""The interactive routes (``/play``): upload an image, type an action, see the world model's
candidates ranked by the dynamics model, continue from one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from worldboot.errors import DataError
from worldboot.web.common import page, redirect, web_state
from worldboot.web.play import Predictor, png_bytes, read_upload, size_text

router = APIRouter()

#: The number of candidates a form may ask for: a whole number (FastAPI checks it, so "²" or
#: "-1" never reach the model); the predictor checks it against its own maximum.
Count = Annotated[int | None, Form(ge=1)]


def need_predictor(request: Request) -> Predictor:
    predictor = web_state(request).predictor
    if predictor is None:
        raise HTTPException(
            404, "Interactive prediction is off: start `worldboot serve --world MODEL_DIR [--verifier MODEL_DIR]`."
        )
    return predictor


def need_rollout(request: Request, rollout_id: str):
    rollout = need_predictor(request).get(rollout_id)
    if rollout is None:
        raise HTTPException(404, "This rollout has expired; start a new one.")
    return rollout


def play_page(request: Request, rollout=None, status_code: int = 200, error: str = "", action: str = "") -> Response:
    p = need_predictor(request)
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
        max_size=size_text(web_state(request).max_upload_bytes),
    )


@router.get("/play", response_class=HTMLResponse)
def play(request: Request) -> Response:
    return play_page(request)


@router.post("/play", response_class=HTMLResponse)
def play_start(
    request: Request,
    image: Annotated[UploadFile | None, File()] = None,
    action: Annotated[str, Form()] = "",
    n: Count = None,
) -> Response:
    p = need_predictor(request)
    limit = web_state(request).max_upload_bytes
    try:
        if image is None:
            raise DataError("choose an image to upload")
        picture = read_upload(image.file.read(limit + 1), limit)
        rollout = p.start(picture, action, n)
    except DataError as err:
        return play_page(request, status_code=400, error=str(err), action=action)
    return redirect(f"/play/{rollout.id}")


@router.get("/play/{rollout_id}", response_class=HTMLResponse)
def play_rollout(request: Request, rollout_id: str) -> Response:
    return play_page(request, need_rollout(request, rollout_id))


@router.post("/play/{rollout_id}/step", response_class=HTMLResponse)
def play_step(
    request: Request,
    rollout_id: str,
    choice: Annotated[int | None, Form(ge=0)] = None,
    action: Annotated[str, Form()] = "",
    n: Count = None,
) -> Response:
    p = need_predictor(request)
    rollout = need_rollout(request, rollout_id)
    try:
        if choice is None:
            raise DataError("choose the candidate to continue from")
        p.step(rollout_id, choice, action, n)
    except DataError as err:
        return play_page(request, rollout, 400, str(err), action)
    return redirect(f"/play/{rollout_id}#step-{len(rollout.steps)}")


@router.get("/play/{rollout_id}/{step}/source.png")
def play_source(request: Request, rollout_id: str, step: int) -> Response:
    rollout = need_rollout(request, rollout_id)
    if not 0 <= step < len(rollout.steps):
        raise HTTPException(404, "No such step.")
    return Response(png_bytes(rollout.steps[step].source_image), media_type="image/png")


@router.get("/play/{rollout_id}/{step}/{k}.png")
def play_candidate(request: Request, rollout_id: str, step: int, k: int) -> Response:
    rollout = need_rollout(request, rollout_id)
    if not 0 <= step < len(rollout.steps) or not 0 <= k < len(rollout.steps[step].candidates):
        raise HTTPException(404, "No such candidate.")
    return Response(png_bytes(rollout.steps[step].candidates[k].image), media_type="image/png")
