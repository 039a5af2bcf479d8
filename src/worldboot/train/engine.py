"""Which engine a training run is on (one process, DDP, DeepSpeed ZeRO), and what differs there.

``accelerate launch --config_file configs/accelerate/zero2.yaml`` (or ``zero3.yaml``) sets
``ACCELERATE_USE_DEEPSPEED``; the :class:`~worldboot.train.recipes.Trainer` then runs on
accelerate's DeepSpeed plugin. What this module adds to accelerate:

* On a machine without a GPU, accelerate's ``cpu=True`` would silently turn a DeepSpeed launch
  into plain multi-CPU DDP; so DeepSpeed runs keep ``cpu=False`` and ask for the ``gloo``
  process group, which DeepSpeed's CPU accelerator accepts (DESIGN.md §4).
* The launch is checked against the run before any compute: DeepSpeed needs the global batch,
  micro-batch and gradient clipping of the run, and ZeRO with one process and nothing offloaded
  shards nothing.
* Under ZeRO-3 each process holds a slice of every weight: :func:`gathered` gives the whole
  weights for saving an adapter or a model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from worldboot.errors import ConfigError


def deepspeed_launch() -> bool:
    """True under ``accelerate launch`` with a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(mixed_precision: str, trackers: list[str], project_dir: str) -> Any:
    """The run's ``Accelerator``: on GPUs as launched; on CPUs with gloo, keeping DeepSpeed on.

    Raises:
        ConfigError: DeepSpeed was asked for but is not installed.
    """
    from accelerate import Accelerator
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import InitProcessGroupKwargs

    kwargs: dict[str, Any] = {}
    gpu = torch.cuda.is_available()
    available = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    missing = [t for t in trackers if t not in available]
    if missing:
        raise ConfigError(
            f"config key 'trackers': {missing[0]!r} is not a tracker accelerate can log to here "
            f"(installed: {', '.join(available) or 'none'})"
        )
    if mixed_precision == "fp16" and not gpu:
        raise ConfigError("config key 'mixed_precision': fp16 needs a GPU; on CPUs use no or bf16")
    if deepspeed_launch():
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError(
                "this launch asks for DeepSpeed (accelerate config distributed_type: DEEPSPEED), which is "
                "not installed: pip install 'worldboot[distributed]' (DS_BUILD_OPS=0 on machines without CUDA)"
            ) from None
        if not gpu:
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    try:
        return Accelerator(
            mixed_precision=mixed_precision,
            cpu=not gpu and not deepspeed_launch(),
            log_with=trackers or None,
            project_dir=project_dir,
            step_scheduler_with_optimizer=False,
            **kwargs,
        )
    except ValueError as err:  # e.g. the launch's DeepSpeed config file is not JSON
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"accelerate refused this launch's settings: {detail[:300]}") from None


def zero_stage(acc: Any) -> int | None:
    """The ZeRO stage of the run, or None when DeepSpeed is off."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def describe(acc: Any) -> str:
    """One line for the run's log: ``DeepSpeed ZeRO-3, 2 processes`` or ``DDP, 4 processes``."""
    stage = zero_stage(acc)
    n = acc.num_processes
    if stage is not None:
        return f"DeepSpeed ZeRO-{stage}, {n} process{'es' if n > 1 else ''} on {acc.device.type}"
    if n > 1:
        return f"DDP ({acc.distributed_type.value}), {n} processes on {acc.device.type}"
    return f"one process on {acc.device}"


def configure_deepspeed(acc: Any, batch_size: int, micro_batch_size: int, accum: int, max_grad_norm: float) -> None:
    """Tell DeepSpeed the run's sizes (the Trainer feeds batches itself, so accelerate cannot
    infer them) and its gradient clipping; refuse a launch that cannot work.

    Raises:
        ConfigError: ZeRO over one process with nothing offloaded.
    """
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    if int(plugin.zero_stage) not in (0, 1, 2, 3):
        raise ConfigError(f"DeepSpeed has ZeRO stages 0-3; this launch's config asks for {plugin.zero_stage}")
    zero = ds.get("zero_optimization", {})
    offloaded = any(
        (zero.get(key) or {}).get("device", "none") not in ("none", None) for key in ("offload_optimizer", "offload_param")
    )
    if acc.num_processes == 1 and int(plugin.zero_stage) > 0 and not offloaded:
        raise ConfigError(
            f"DeepSpeed ZeRO-{plugin.zero_stage} shards over processes, but this launch has 1: pass "
            "--num_processes N (N >= 2) to accelerate launch, or offload to the CPU"
        )
    ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds["gradient_accumulation_steps"] = accum
    ds["train_batch_size"] = batch_size
    ds["gradient_clipping"] = max_grad_norm


@contextlib.contextmanager
def gathered(acc: Any, model: Any) -> Iterator[None]:
    """Whole weights inside the block on every process (ZeRO-3 partitions them); a no-op
    for every other engine. Every process must enter it (it is a collective)."""
    if zero_stage(acc) != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(acc.unwrap_model(model).parameters()), modifier_rank=None):
        yield


@contextlib.contextmanager
def unpartitioned_loading(acc: Any) -> Iterator[None]:
    """Models loaded inside the block are whole and local to this process.

    Under ZeRO-3, transformers' ``from_pretrained`` partitions every new model over the
    processes (a collective), so loading one on the main process alone would wait for the
    others forever; here it loads as it would outside DeepSpeed.
    """
    if zero_stage(acc) != 3:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    config = getattr(acc.state.deepspeed_plugin, "dschf", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            set_hf_deepspeed_config(config)
