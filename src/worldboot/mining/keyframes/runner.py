"""A mining run: per-video results written atomically, resume, pairs, and the local process pool or Ray Data."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from worldboot.data.schema import Problems
from worldboot.errors import DataError
from worldboot.mining.keyframes.config import KeyframeConfig, MiningSummary, VideoTask
from worldboot.mining.keyframes.flow import _FramePool, scan_video
from worldboot.mining.keyframes.select import greedy_keyframes
from worldboot.mining.keyframes.videos import find_videos
from worldboot.progress import progress_bar
from worldboot.run_guards import out_folder
from worldboot.runs import RunDir, write_atomic


def _encode_image(image, fmt: str, quality: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else []
    ok, buf = cv2.imencode(f".{fmt}", image, params)
    if not ok:
        raise DataError(f"cannot encode a key-frame as {fmt.upper()}")
    return buf.tobytes()


def _source_stat(path: str) -> tuple[int | None, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime


def result_path(run_dir: str | os.PathLike[str], video_id: str) -> Path:
    """Where a video's result JSON lives."""
    return Path(run_dir) / "videos" / f"{video_id}.json"


def mine_video(task: Mapping[str, Any], run_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Mine one video and write its result: key-frame PNGs first, then its JSON, atomically.

    This is the unit of work of both engines (a process pool and Ray Data): it takes and
    returns plain data. A video that cannot be read gets a result with ``status: problem``
    and the reason, so that it is reported, and not retried, by later runs.

    Args:
        task: A :class:`VideoTask` as a dict.
        run_dir: The run directory.
        cfg: A :class:`KeyframeConfig` as a dict.

    Returns:
        The result that was written.
    """
    import cv2

    cv2.setNumThreads(1)
    conf = KeyframeConfig(**cfg)
    video_id = task["video_id"]
    frames_rel = Path("frames") / video_id
    frames_dir = Path(run_dir) / frames_rel
    size, mtime = _source_stat(task["path"])
    record: dict[str, Any] = {
        "video_id": video_id,
        "video": task["video"],
        "path": task["path"],
        "label": task["label"],
        "settings": conf.settings(),
        "source_size": size,
        "source_mtime": mtime,
        "status": "ok",
        "reason": None,
        "n_frames": 0,
        "fps": 0.0,
        "duration": 0.0,
        "keyframes": [],
        "scores": [],
    }
    # Frames of a killed earlier attempt are stale: start the folder afresh.
    shutil.rmtree(frames_dir, ignore_errors=True)
    try:
        if size is None:
            raise DataError("file not found or unreadable")
        if size == 0:
            raise DataError("empty file (0 bytes)")
        scan = scan_video(task["path"], conf)
    except DataError as err:
        record.update(status="problem", reason=str(err))
    except cv2.error as err:  # OpenCV refused this video's frames: its problem, not the run's end
        message = next((line for line in str(err).splitlines() if "error:" in line), str(err)).strip()
        record.update(status="problem", reason=f"OpenCV cannot process its frames: {message}")
    else:
        chosen = greedy_keyframes({f: s for f, (s, _, _) in scan.kept.items()}, conf.k, conf.interval)
        frames_dir.mkdir(parents=True, exist_ok=True)
        keyframes = []
        for frame_idx in chosen:
            score, ts, image = scan.kept[frame_idx]
            rel = (frames_rel / f"{frame_idx:06d}.{conf.image_format}").as_posix()
            out = Path(run_dir) / rel
            write_atomic(out, _encode_image(image, conf.image_format, conf.jpeg_quality))
            keyframes.append({"frame": frame_idx, "score": score, "time": ts, "image": rel})
        _FramePool.recycle(image for _, _, image in scan.kept.values())
        record.update(
            n_frames=scan.n_frames,
            claimed_frames=scan.claimed_frames,
            fps=scan.fps,
            duration=scan.duration,
            keyframes=keyframes,
            scores=[[f, s] for f, s in scan.scores],
        )
    write_atomic(result_path(run_dir, video_id), json.dumps(record))
    return record


def _ray_mine(row: dict[str, Any], run_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    # Rows travel as Arrow tables: a JSON string avoids schema trouble with nested lists and Nones.
    record = mine_video(json.loads(row["task"]), run_dir, cfg)
    return {"record": json.dumps(record)}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# -- a run ------------------------------------------------------------------------------------------


def load_result(
    run_dir: str | os.PathLike[str], task: VideoTask, cfg: KeyframeConfig
) -> dict[str, Any] | None:
    """A finished result of ``task`` with the same settings and source file, else None."""
    path = result_path(run_dir, task.video_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("settings") != cfg.settings()
        or record.get("path") != task.path
    ):
        return None
    size, mtime = _source_stat(task.path)
    if (record.get("source_size"), record.get("source_mtime")) != (size, mtime):
        return None
    if record.get("status") == "ok":
        for kf in record.get("keyframes", []):
            if not (Path(run_dir) / kf["image"]).is_file():
                return None
    return record


def pair_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``pairs.jsonl`` rows of one video's result: consecutive key-frames in time order."""
    if record.get("status") != "ok":
        return []
    kfs = sorted(record["keyframes"], key=lambda kf: kf["frame"])
    rows = []
    for a, b in zip(kfs[:-1], kfs[1:], strict=True):
        rows.append(
            {
                "id": f"{record['video_id']}/{a['frame']:06d}-{b['frame']:06d}",
                "video": record["video"],
                "label": record["label"],
                "source": a["image"],
                "target": b["image"],
                "source_frame": a["frame"],
                "target_frame": b["frame"],
                "source_score": a["score"],
                "target_score": b["score"],
                "source_time": a["time"],
                "target_time": b["time"],
                "duration": record["duration"],
            }
        )
    return rows


def _run_local(
    tasks: list[VideoTask], run_dir: str, cfg: KeyframeConfig, on_done: Callable[[dict[str, Any]], None]
) -> None:
    cfg_dict = asdict(cfg)
    if cfg.workers == 1:
        _init_worker_logging_only()
        for task in tasks:
            on_done(mine_video(asdict(task), run_dir, cfg_dict))
        return
    import multiprocessing as mp

    # spawn: forking a process that runs a progress-bar thread can deadlock.
    with ProcessPoolExecutor(
        cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
    ) as pool:
        pending = {pool.submit(mine_video, asdict(t), run_dir, cfg_dict) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _init_worker_logging_only() -> None:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _run_ray(
    tasks: list[VideoTask], run_dir: str, cfg: KeyframeConfig, on_done: Callable[[dict[str, Any]], None]
) -> None:
    from worldboot.ray_data import RaySettings, start

    start(RaySettings(actors=cfg.workers))  # the cluster RAY_ADDRESS names, else a local Ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts videos
    ds = ray.data.from_items([{"task": json.dumps(asdict(t))} for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map(_ray_mine, fn_kwargs={"run_dir": run_dir, "cfg": asdict(cfg)}, num_cpus=1)
    for row in ds.iter_rows():
        on_done(json.loads(row["record"]))


def assemble(
    run_dir: str | os.PathLike[str], tasks: Sequence[VideoTask], cfg: KeyframeConfig
) -> MiningSummary:
    """Write ``pairs.jsonl``, ``problems.jsonl`` and ``summary.json`` from the per-video results."""
    run = Path(run_dir)
    summary = MiningSummary(videos=len(tasks))
    problems = Problems()
    lines: list[str] = []
    for task in tasks:
        record = load_result(run, task, cfg)
        reason = "no result (the run was interrupted): rerun to finish" if record is None else record["reason"]
        if record is None or record["status"] != "ok":
            # A listed video's problem names the list's line, and the video after the reason.
            where = (task.listed_in, task.line, f"{reason}: {task.video}") if task.listed_in else (task.path, 0, reason)
            problems.add(*where)
            continue
        summary.mined += 1
        n_kf = len(record["keyframes"])
        summary.keyframes += n_kf
        summary.short += n_kf < cfg.k
        summary.no_pairs += n_kf < 2
        summary.fewer_frames += 0 < record.get("n_frames", 0) < record.get("claimed_frames", 0)
        for row in pair_rows(record):
            lines.append(json.dumps(row) + "\n")
    summary.pairs = len(lines)
    summary.problems = len(problems)
    summary.problem_reasons = dict(problems.counts())
    write_atomic(run / "pairs.jsonl", "".join(lines))
    problems.write(run / "problems.jsonl")
    return summary


def mine_videos(
    source: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    cfg: KeyframeConfig | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> MiningSummary:
    """Mine every video of ``source`` into ``run_dir`` (resuming an earlier run there).

    Args:
        source: A directory of videos, or a list (see :func:`find_videos`).
        run_dir: The output directory.
        cfg: Settings (defaults: the paper's K_f = 6, I_f = 20, DIS flow).
        on_result: Called in this process with each new result, as soon as it is written.
        progress: Show a progress bar.

    Returns:
        Counts; ``pairs.jsonl`` and ``problems.jsonl`` are in ``run_dir``.

    Raises:
        DataError: For a missing or empty source, or (``strict``) the first bad video.
    """
    cfg = cfg or KeyframeConfig()
    cfg.validate()
    list_problems = Problems(strict=cfg.strict)
    hidden: list[Path] = []
    tasks = find_videos(source, list_problems, hidden)
    run = out_folder(run_dir, "keyframes")
    with RunDir(run, cfg, "keyframes") as rd:
        (run / "videos").mkdir(parents=True, exist_ok=True)
        for stale in (run / "videos").glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        earlier = [load_result(run, t, cfg) for t in tasks]
        todo = [t for t, r in zip(tasks, earlier, strict=True) if r is None]
        bad = next((r for r in earlier if r is not None and r.get("status") != "ok"), None)
        if cfg.strict and bad is not None:  # a video skipped by an earlier run fails --strict too
            raise DataError(f"{bad['path']}: {bad.get('reason')} (found by an earlier run in {run})")
        rd.log(f"{len(tasks)} videos, {len(tasks) - len(todo)} already mined, engine {cfg.engine}"
               + (f", {len(hidden)} hidden files left out" if hidden else ""))
        bar = progress_bar("keyframes", progress, info=True)
        with bar:
            job = bar.add_task("videos", total=len(tasks), completed=len(tasks) - len(todo), info="")
            skipped = 0

            def on_done(record: dict[str, Any]) -> None:
                nonlocal skipped
                if record["status"] != "ok":
                    skipped += 1
                    rd.log(f"skipped {record['video']}: {record['reason']}")
                    if cfg.strict:
                        raise DataError(f"{record['path']}: {record['reason']}")
                bar.update(job, advance=1, info=f"{skipped} skipped" if skipped else "")
                if on_result is not None:
                    on_result(record)

            if todo:
                engine = _run_ray if cfg.engine == "ray" else _run_local
                engine(todo, str(run), cfg, on_done)
        summary = assemble(run, tasks, cfg)
        summary.resumed = sum(r is not None and r.get("status") == "ok" for r in earlier)  # of the mined
        summary.problems += len(list_problems)
        summary.listing_problems = len(list_problems)
        summary.hidden = len(hidden)
        for p in list_problems:
            summary.problem_reasons[p.reason] = summary.problem_reasons.get(p.reason, 0) + 1
        if len(list_problems):
            # List problems (malformed lines, duplicates) join the per-video ones.
            existing = (run / "problems.jsonl").read_text()
            extra = "".join(json.dumps(asdict(p)) + "\n" for p in list_problems)
            write_atomic(run / "problems.jsonl", extra + existing)
        write_atomic(run / "summary.json", json.dumps(asdict(summary), indent=2))
        rd.log(f"{summary.pairs} pairs from {summary.mined} videos, {summary.problems} problems")
    return summary
