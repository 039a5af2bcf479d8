"""The GPU check: the whole pipeline on the CUDA devices present, in a few minutes, printing what
it measured (``scripts/gpu-check.sh`` runs it).

It builds a Chameleon-architecture model large enough to exercise the GPU paths (about 110M
parameters, 256-pixel images of 256 tokens), then through worldboot's own commands:

1. world triplets, tokenized on the GPU (``worldboot tokenize``'s ``build_cache``);
2. ``worldboot train world`` under ``accelerate launch`` with ZeRO-2 on every GPU present (one
   GPU: one process), bf16 autocast, SDPA attention (transformers' default) and gradient
   checkpointing; LoRA as the paper trains;
3. ``worldboot generate`` with best-of-1 and best-of-8 (the trained model as its own verifier),
   and best-of-1 again through Ray Data (``--engine ray --gpus-per-actor 1``).

It prints images tokenized per second, training tokens per second and samples per second for
best-of-1 and best-of-8. On a machine without a GPU it says so in one line and exits 0.
``--device cpu`` runs the same steps on the CPU at tiny sizes, two processes over gloo (how the
tests keep it from rotting).

    bash scripts/gpu-check.sh                 # on a GPU machine
    bash scripts/gpu-check.sh --device cpu    # the same steps, tiny, on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Model, data and step sizes per device: large enough on a GPU to use its kernels, tiny on CPU.
SIZES = {
    "cuda": {"spec": {"hidden": 1024, "layers": 8, "heads": 16, "intermediate": 2816, "codebook": 8192,
                      "image_size": 256, "vq_base_channels": 64, "vq_channel_multiplier": [1, 1, 2, 2, 4],
                      "max_positions": 1024},
             "per_subset": 40, "steps": 30, "batch": 16, "micro": 4, "test": 32},
    "cpu": {"spec": {}, "per_subset": 6, "steps": 2, "batch": 4, "micro": 2, "test": 4},
}


def _run(cmd: list[str], env: dict[str, str], what: str) -> float:
    """Run a command; its seconds. Exits with its output on failure."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"gpu-check: {what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", help="a scratch folder (default: a temporary one, removed after)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--processes", type=int, help="training processes (default: every GPU; on CPU 2, over gloo)")
    p.add_argument("--no-ray", action="store_true",
                   help="skip the Ray Data step (the CPU test does: the Ray engine has tests of its own)")
    args = p.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing to check")
        return 0
    gpus = args.processes or (torch.cuda.device_count() if args.device == "cuda" else 2)
    size = SIZES[args.device]
    work = Path(args.work or tempfile.mkdtemp(prefix="wb-gpu-check-"))
    env = {**os.environ, "WORLDBOOT_NO_PROGRESS": "1"}
    if args.device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    wb = [sys.executable, "-m", "worldboot.cli"]
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"gpu-check on {gpus} x {card}, in {work}")

    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    model = save_tiny_chameleon(work / "model", TinyChameleonSpec(**size["spec"]))
    image = TinyChameleonSpec(**size["spec"]).image_size
    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.world.gen import generate_triplets

    train = generate_triplets(work / "train", size["per_subset"], seed=0, size=image)
    generate_triplets(work / "test", size["test"] // 5 + 1, seed=1, size=image)
    t0 = time.perf_counter()
    placement = {"device_map": "cuda", "dtype": "bfloat16"} if args.device == "cuda" else {}
    build_cache(train, load_backbone(model, **placement), work / "cache", progress=False)  # the VQ encoder on the GPU
    tokenize_s = time.perf_counter() - t0

    # Training: ZeRO-2 over every GPU present (one GPU: one process, ZeRO would shard nothing).
    command = ["train", "world", "--config", "configs/demo/cwm.yaml", "--base", str(model), "--cache",
             str(work / "cache"), "--out", str(work / "cwm"), f"max_steps={size['steps']}", f"batch_size={size['batch']}",
             f"micro_batch_size={size['micro']}", "lora.enabled=true", "gradient_checkpointing=true", "log_every=1",
             "optim.warmup_steps=0", "data.eval_fraction=0.0",
             f"mixed_precision={'bf16' if args.device == 'cuda' else 'no'}"]
    if gpus > 1:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
        launch = [accelerate, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "zero2.yaml"),
                  "--num_processes", str(gpus), "--main_process_port", _port()]
        if args.device == "cpu":
            launch += ["--mixed_precision", "no"]
        cmd = [*launch, "-m", "worldboot.cli", *command]
    else:
        cmd = [*wb, *command]
    train_s = _run(cmd, {**env, "PYTHONPATH": str(ROOT)}, "training")
    rows = [json.loads(line) for line in (work / "cwm" / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:] or [0.0]  # the first step warms up

    manifest = str(work / "test" / "manifest.jsonl")
    n = len(Path(manifest).read_text(encoding="utf-8").splitlines())
    os.environ.update(WORLDBOOT_NO_PROGRESS="1")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from worldboot.infer.generate import GenerateConfig, run_generate
    from worldboot.infer.predict import load_models

    def generate(out: str, best_of: int, models: tuple | None = None) -> tuple[float, tuple]:
        """Seconds of ``run_generate`` over the manifest, its models already loaded (as a
        long run amortises their load); the models."""
        cfg = GenerateConfig(manifest=manifest, out=str(work / out), world=str(work / "cwm"), batch_size=8,
                             best_of=best_of, device=args.device, dtype="bfloat16" if args.device == "cuda" else None)
        if best_of > 1:
            cfg.verifier.path = str(work / "cwm")  # the trained model scores its own candidates
        world, verifier = models or load_models(cfg)
        t0 = time.perf_counter()
        run_generate(cfg, world=world, verifier=verifier if best_of > 1 else None, progress=False)
        return time.perf_counter() - t0, (world, verifier)

    _, models = generate("pred-warm-up", 8)  # loads both models, and warms the kernels up
    one_s, _ = generate("pred-1", 1, models)
    eight_s, _ = generate("pred-8", 8, models)
    ray = [*wb, "generate", manifest, "--world", str(work / "cwm"), "--batch-size", "8", "--no-progress",
           "--out", str(work / "pred-ray"), "--engine", "ray", "--actors", "1", "--gpus-per-actor",
           "1" if args.device == "cuda" else "0"]
    ray_s = 0.0 if args.no_ray else _run(ray, env, "generate on Ray Data")
    figures = {
        "device": card, "gpus": gpus, "tokenize_images_per_s": 2 * len(train) / tokenize_s,
        "train_tokens_per_s": sum(speeds) / len(speeds), "train_s": train_s,
        "samples": n, "best_of_1_samples_per_s": n / one_s, "best_of_8_samples_per_s": n / eight_s,
        "ray_best_of_1_samples_per_s": None if args.no_ray else n / ray_s,
    }
    print(f"tokenize: {figures['tokenize_images_per_s']:.0f} images/s (with the model's load)")
    print(f"training ({'ZeRO-2 on ' + str(gpus) + ' processes' if gpus > 1 else 'one process'}, "
          f"{'bf16, ' if args.device == 'cuda' else ''}gradient checkpointing, LoRA): "
          f"{figures['train_tokens_per_s']:.0f} tokens/s over {size['steps']} steps")
    print(f"generate ({n} samples): best-of-1 {figures['best_of_1_samples_per_s']:.2f} samples/s, best-of-8 "
          f"{figures['best_of_8_samples_per_s']:.2f} samples/s")
    if not args.no_ray:
        print(f"best-of-1 on Ray Data: {figures['ray_best_of_1_samples_per_s']:.2f} samples/s (a fresh process: "
              "Ray's start and the model's load included)")
    if args.json:
        print(json.dumps(figures))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
