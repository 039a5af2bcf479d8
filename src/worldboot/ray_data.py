"""Ray Data as the engine of the per-item stages (annotation, generation), for clusters.

A stage cuts its work into **jobs** (one job = one batch of the local path, so that a job
computes exactly what the local run computes) and gives each to :func:`run_jobs`, which sends
them through ``ray.data`` ``map_batches`` with an actor pool: each actor loads the model once
(the stage's ``load(**kwargs)``) and runs the same per-batch function as the local path
(``work(model, job)``). Results come back to the driver, which alone writes the stage's JSONL,
so resuming, problems and output order work as in the local run.

Jobs whose actor died are retried by Ray (``max_restarts`` / ``max_task_retries``); a job
that never returns is handed back to the caller, which reports it (never lost silently).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worldboot import errors
from worldboot.errors import ConfigError, UserError
from worldboot.progress import libraries_quiet

#: The key of a job's result that carries a user's mistake back from an actor.
USER_ERROR = "__worldboot_user_error__"

#: How often Ray restarts a dead actor and retries its batch before the job is reported.
RETRIES = 2


@dataclass
class RaySettings:
    """Where and how wide a Ray Data run is.

    Attributes:
        address: A running cluster (``HOST:PORT`` of its head, ``ray://HOST:10001`` for Ray
            Client, or ``auto``); None: ``RAY_ADDRESS`` if set, else a local Ray on this
            machine's CPUs.
        actors: Model actors (each holds one copy of the model).
        gpus_per_actor: GPUs each actor reserves (0 on CPUs; 1 for a 7B model per GPU).
        cpus_per_actor: CPUs each actor reserves.
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for sizes that cannot work."""
        if self.actors < 1:
            raise ConfigError(f"ray.actors must be at least 1, got {self.actors}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ConfigError("ray.gpus_per_actor must be >= 0 and ray.cpus_per_actor > 0")


def _reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at a cluster address (``ray.init``
    would retry for minutes and print C++ warnings)."""
    if address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


def _ray_log_level() -> int:
    """Ray logs to the console at INFO: kept to errors unless --verbose (Ray Data's logger is
    set up from ``RAY_DATA_LOG_LEVEL``, which :func:`~worldboot.progress.quiet_libraries` sets)."""
    level = logging.ERROR if libraries_quiet() else logging.INFO
    logging.getLogger("ray").setLevel(level)
    return level


def start(settings: RaySettings) -> None:
    """Connect to the cluster (or start a local Ray) unless this process already has one.

    Raises:
        ConfigError: Ray Data is not installed, or the address is malformed.
        UserError: Nothing answers at the address.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray engine needs Ray Data: pip install 'worldboot[distributed]'") from None
    if ray.is_initialized():
        return
    level = _ray_log_level()
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        _reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=level)
        except (ConnectionError, RuntimeError) as err:
            cause = f"{err} {err.__cause__ or ''}"
            if "AuthToken" in cause or "Authentication" in cause:
                raise UserError(
                    f"the Ray cluster at {address} asks for its auth token: export RAY_AUTH_MODE=token, with the "
                    "head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                ) from None
            raise UserError(f"cannot connect to the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    else:
        cpus = max(int(settings.actors * settings.cpus_per_actor), 1)
        # address="local": a Ray of this run's own, even where `ray start` left a cluster running on
        # this machine (which Ray would join, refusing num_cpus with a traceback).
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=level)


@dataclass
class RayOutcome:
    """What :func:`run_jobs` could not do.

    Attributes:
        lost: The jobs whose results never came back (a rerun does them).
        error: Why, when Ray raised (an actor that died too often, an error in the work).
    """

    lost: list[dict[str, Any]]
    error: str | None

    def reason(self, what: str) -> str:
        """The problem line for each item of a lost job."""
        return f"not {what}: {self.error or 'its Ray worker failed'} (rerun to finish)"


class _Actor:
    """One model per actor; runs jobs with the stage's per-batch function."""

    def __init__(self, load: Callable[..., Any], work: Callable[[Any, dict[str, Any]], dict[str, Any]],
                 kwargs: dict[str, Any]) -> None:
        os.environ.setdefault("WORLDBOOT_NO_PROGRESS", "1")
        self.work = work
        self.model = load(**kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = []
        for job in batch["job"]:
            try:
                results.append(json.dumps(self.work(self.model, json.loads(job))))
            except UserError as err:
                # A user's mistake (a folder named like an image...) travels back as data: Ray
                # would retry it, then report only its own advice (the cause does not survive
                # pickling). The driver raises it, as the run without Ray does.
                results.append(json.dumps({USER_ERROR: [type(err).__name__, str(err)]}))
        return {"index": list(batch["index"]), "result": results}


def run_jobs(
    jobs: list[dict[str, Any]],
    load: Callable[..., Any],
    work: Callable[[Any, dict[str, Any]], dict[str, Any]],
    load_kwargs: dict[str, Any],
    settings: RaySettings,
    on_result: Callable[[dict[str, Any], dict[str, Any]], None],
) -> RayOutcome:
    """Run ``work(model, job)`` for every job on Ray Data actors; call ``on_result(job,
    result)`` in this process as results arrive (in any order).

    ``load``, ``work`` and every job must be importable / JSON-serialisable (they travel to
    the cluster). Returns the jobs that never came back, and why.
    """
    import ray.data

    settings.validate()
    if not jobs:
        return RayOutcome([], None)
    start(settings)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the stage's own bar counts items
    ds = ray.data.from_items([{"job": json.dumps(j), "index": i} for i, j in enumerate(jobs)],
                             override_num_blocks=len(jobs))
    # Ray Data restarts dead actors and retries their batches without end by default, so one
    # batch that kills its actor every time would hang the run. Bounding that needs
    # ``ray_remote_args``, which Ray 2.60 deprecates without a named replacement (it warns;
    # when it is gone, Ray's unbounded default applies).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        ds = ds.map_batches(
            _Actor,
            fn_constructor_kwargs={"load": load, "work": work, "kwargs": load_kwargs},
            batch_size=1,
            concurrency=settings.actors,
            num_cpus=settings.cpus_per_actor,
            num_gpus=settings.gpus_per_actor or None,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )
    returned: set[int] = set()
    error = None
    try:
        for row in ds.iter_rows():
            index = int(row["index"])
            result = json.loads(row["result"])
            if USER_ERROR in result:  # what came back before it is written; the run stops here
                kind, message = result[USER_ERROR]
                cls = getattr(errors, kind, None)
                raise (cls if isinstance(cls, type) and issubclass(cls, UserError) else UserError)(message)
            returned.add(index)
            on_result(jobs[index], result)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray raises many kinds; the jobs are reported, not lost
        # An actor that died more than RETRIES times, or a bug in ``work``: what came back is
        # written; the rest is handed back with the reason. Ray's message ends with the
        # remote traceback's last line, the exception that was raised.
        lines = [line for line in str(err).splitlines() if line.strip()]
        error = f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]
    return RayOutcome([j for i, j in enumerate(jobs) if i not in returned], error)

