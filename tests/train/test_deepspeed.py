"""DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch`, as docs/scaling-out.md shows it,
on 2 CPU processes (gloo): the same adapter as one process, resume, adapter-only save under
ZeRO-3 that reloads outside DeepSpeed, --merge, and launches that cannot work.

The first DeepSpeed launch on a machine without a GPU compiles DeepSpeed's shared-memory
all-reduce (about 90 s, once; cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_LOGPROB_SLOPE, adamw_atol, assert_adapters_agree, assert_losses_agree, f32_atol

pytest.importorskip("deepspeed", reason="DeepSpeed is part of the dev install: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent))
# 4 global steps of 2 samples; LoRA dropout 0, so no run draws random masks. AdamW's eps at 1
# keeps an update's slope in the gradient at lr / eps, so that rounding has a bound
# (helpers.adamw_atol): ADAPTER_ATOL is what it allows between the runs' adapters.
OVERRIDES = [
    "max_steps=4", "batch_size=2", "save_every=2", "eval_every=0", "log_every=1", "lora.dropout=0.0",
    "optim.lr=5e-3", "optim.eps=1.0", "optim.warmup_steps=0", "data.eval_fraction=0.1",
]
OPTIM = {"lr": 5e-3, "eps": 1.0, "max_grad_norm": 1.0}
ADAPTER_ATOL = adamw_atol(steps=4, **OPTIM)
ENV = {**os.environ, "WORLDBOOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tiny_dir, cache_dir, out, *extra, launch: list[str] | None = None) -> subprocess.CompletedProcess:
    """`worldboot train dynamics`, alone or under `accelerate launch <launch>`."""
    cli = ["-m", "worldboot.cli", "train", "dynamics", "--cache", str(cache_dir), "--out", str(out),
           f"base_model={tiny_dir}", *OVERRIDES, *extra]
    cmd = [sys.executable, *cli] if launch is None else [
        ACCELERATE, "launch", *launch, "--main_process_port", str(_free_port()), *cli]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def _zero(stage: int, processes: int = 2) -> list[str]:
    """The launch of docs/scaling-out.md with sizes changed: 2 CPU processes, no bf16."""
    return ["--config_file", str(ROOT / "configs" / "accelerate" / f"zero{stage}.yaml"),
            "--num_processes", str(processes), "--mixed_precision", "no"]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir, cache_dir) -> dict[str, Path]:
    """One process with micro-batch 2, and ZeRO-2 and ZeRO-3 on 2 processes with micro-batch 1
    (the same global batch), each with --merge."""
    root = tmp_path_factory.mktemp("ds-runs")
    out = {}
    for name, launch in (("one", None), ("zero2", _zero(2)), ("zero3", _zero(3))):
        micro = "micro_batch_size=2" if launch is None else "micro_batch_size=1"
        done = _train(tiny_dir, cache_dir, root / name, micro, "--merge", launch=launch)
        assert done.returncode == 0, (name, done.stdout[-2000:], done.stderr[-3000:])
        out[name] = root / name
    return out


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_ends_with_the_adapter_of_one_process(runs, stage):
    """The same adapter and losses as one process, to the float32 rounding derived in
    helpers.adamw_atol, as for DDP: the runs add the same per-token losses in another order, and
    ZeRO's AdamW is torch's, applied to each process's flat slice of the weights (its clipping
    takes the norm over the slices, another order again)."""
    run = runs[f"zero{stage}"]
    log = (run / "log.txt").read_text()
    assert log.count(f"DeepSpeed ZeRO-{stage}, 2 processes on cpu") == 1, log  # one writer, the engine named
    assert_losses_agree(_losses(run), _losses(runs["one"]), **OPTIM)
    assert_adapters_agree(_adapter(runs["one"]), _adapter(run), ADAPTER_ATOL)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_adapter_and_merge_reload_outside_deepspeed(runs, stage, tiny_dir, cache_dir):
    from worldboot.data.cache import CachedTripletDataset
    from worldboot.models import load_backbone

    run = runs[f"zero{stage}"]
    items = [CachedTripletDataset(cache_dir)[i] for i in range(3)]
    base = load_backbone(tiny_dir)
    examples = [base.dynamics_example(it["source_codes"], it["target_codes"], it["action"]) for it in items]
    one = load_backbone(runs["one"] / "adapter").score(examples)
    adapter = load_backbone(run / "adapter").score(examples).total
    merged = load_backbone(run / "merged").score(examples).total
    # A total is a float32 sum of its tokens' log-probabilities (one sign: the total bounds them),
    # f32_atol(total); the adapters differ by ADAPTER_ATOL (l2) at most, which moves each token's
    # log-probability by TINY_LOGPROB_SLOPE times that. The merged weights are rounded once more.
    rounding = f32_atol(one.total.abs().max())
    tol = rounding + TINY_LOGPROB_SLOPE * ADAPTER_ATOL * float(one.count.max())
    assert float((adapter - base.score(examples).total).abs().min()) > 5 * tol  # trained, and saved whole
    torch.testing.assert_close(adapter, one.total, atol=tol, rtol=0)
    torch.testing.assert_close(merged, adapter, atol=rounding, rtol=0)
    # Checkpoints hold the adapter and its optimiser state, not the frozen base.
    ckpt = sum(f.stat().st_size for f in (run / "checkpoints" / "step-0000004").rglob("*") if f.is_file())
    assert ckpt < (Path(tiny_dir) / "model.safetensors").stat().st_size / 2


def test_zero3_resumes_after_a_kill(runs, tiny_dir, cache_dir, tmp_path):
    """The folder a kill during step 4 leaves (checkpoint 2, metrics of steps 1-3), resumed:
    the same losses and adapter as the uninterrupted run."""
    killed = tmp_path / "killed"
    shutil.copytree(runs["zero3"], killed)
    for name in ("adapter", "merged", "checkpoints/step-0000004"):
        shutil.rmtree(killed / name)
    rows = (killed / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r).get("step", 0) <= 3
                                                  and "final" not in r))
    done = _train(tiny_dir, cache_dir, killed, "micro_batch_size=1", "--resume", launch=_zero(3))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    # The same steps on the same processes and shapes from the exact saved state: bit for bit.
    assert _losses(killed) == _losses(runs["zero3"])
    a, b = _adapter(runs["zero3"]), _adapter(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("launch", "extra", "says"),
    [
        (_zero(3, processes=1), ["micro_batch_size=1"], "DeepSpeed ZeRO-3 shards over processes, but this launch has 1"),
        (_zero(2), ["micro_batch_size=2"], "batch_size 2 is not a multiple of micro_batch_size 2 x 2 processes"),
    ],
    ids=["zero3-one-process", "micro-batch"],
)
def test_a_launch_that_cannot_work_is_one_line_before_compute(tiny_dir, cache_dir, tmp_path, launch, extra, says):
    done = _train(tiny_dir, cache_dir, tmp_path / "run", *extra, launch=launch)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("worldboot train: error:")]
    assert ours and all(says in line for line in ours), done.stderr[-3000:]
    # worldboot's processes wrote no traceback (the launcher reports the failed process after them)
    assert "Traceback" not in done.stderr.split(ours[-1])[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_two_machines_under_zero3(runs, tiny_dir, cache_dir, tmp_path):
    """The two-node launch of docs/scaling-out.md with one process per "machine", both on this host: the
    same losses as one process."""
    port = str(_free_port())
    cli = ["-m", "worldboot.cli", "train", "dynamics", "--cache", str(cache_dir), "--out", str(tmp_path / "run"),
           f"base_model={tiny_dir}", *OVERRIDES, "micro_batch_size=1", "--merge"]
    nodes = [
        subprocess.Popen(
            [ACCELERATE, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "zero3.yaml"),
             "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", port,
             "--deepspeed_multinode_launcher", "standard", "--mixed_precision", "no", *cli],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        out, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert_losses_agree(_losses(tmp_path / "run"), _losses(runs["one"]), **OPTIM)
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()


def test_the_bf16_engine_leaves_the_saved_tokenizer_as_loaded(tiny_dir, cache_dir, tmp_path):
    """DeepSpeed's bf16 engine casts every parameter, the frozen image tokenizer's too (its
    keep_in_fp32 setting keeps buffers only): a model fine-tuned in full under it is saved with
    the tokenizer's float32 weights as loaded, bit for bit, not rounded to bf16."""
    from safetensors.torch import load_file

    launch = ["--config_file", str(ROOT / "configs" / "accelerate" / "zero2.yaml"), "--num_processes", "2",
              "--mixed_precision", "bf16"]
    done = _train(tiny_dir, cache_dir, tmp_path / "full", "micro_batch_size=1", "lora.enabled=false",
                  "mixed_precision=bf16", "model_dtype=float32", "save_every=0", launch=launch)
    assert done.returncode == 0, done.stderr[-3000:]
    base, saved = load_file(str(tiny_dir / "model.safetensors")), load_file(str(tmp_path / "full" / "merged" /
                                                                                 "model.safetensors"))
    vq = [k for k in base if ".vqmodel." in f".{k}"]
    assert vq and all(saved[k].dtype == torch.float32 and torch.equal(saved[k], base[k]) for k in vq)
    assert any(saved[k].dtype == torch.bfloat16 for k in saved if k not in vq)  # the engine did run in bf16
