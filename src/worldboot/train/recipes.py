"""Training recipes for the dynamics model (CDM) and the world model (CWM), on accelerate + peft.

A recipe is ``setup / train / save_checkpoint / cleanup`` (torchtune's shape). The same code
runs on one CPU, under ``accelerate launch`` with DDP on several GPUs (or 2 CPU processes
with gloo), and with DeepSpeed ZeRO through accelerate's DeepSpeed plugin.

Data order is computed, not drawn: each epoch is a permutation seeded by ``seed + epoch``,
cut into global batches (``batch_size`` samples, the last incomplete one dropped); process
``p`` of ``P`` takes every ``P``-th sample of a global batch and splits its share into
micro-batches. The data position is therefore just the global step, and ``--resume``
continues exactly (model adapter, optimiser, scheduler and RNG states come from accelerate's
``save_state``; :mod:`worldboot.train.checkpoints` keeps the bookkeeping around it). The loss
of a global batch is the sum of (weighted) token losses over all its micro-batches and
processes divided by its number of completion tokens, so one process with micro-batch 2 and
two processes with micro-batch 1 compute the same gradient.

Its settings are :mod:`worldboot.train.config`; the mix of token caches it reads is
:mod:`worldboot.train.data`.

(Over 400 lines because the Trainer is one torchtune-style recipe: setup, train, save, cleanup.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from worldboot.errors import ConfigError, DataError, ModelError
from worldboot.progress import progress_bar
from worldboot.run_guards import claim_folder, held_stage
from worldboot.runs import write_atomic
from worldboot.train import checkpoints
from worldboot.train.config import ADAPTER_DIR, CHECKPOINTS_DIR, MERGED_DIR, TrainConfig, accumulation_steps
from worldboot.train.data import CacheEntry, MixedDataset
from worldboot.train.engine import (
    configure_deepspeed,
    gathered,
    make_accelerator,
    unpartitioned_loading,
    zero_stage,
)
from worldboot.train.examples import RenderedExample, collate, render_example
from worldboot.train.losses import completion_loss_sum


def _bf16_gpu() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


class Trainer:
    """One training run: ``setup()``, ``train()``, ``save_checkpoint()``, ``cleanup()``.

    Args:
        cfg: The resolved config.
        resume: Continue from the latest checkpoint in ``cfg.out`` (True), a given checkpoint
            directory (str), or start fresh (False).
    """

    def __init__(self, cfg: TrainConfig, resume: bool | str = False) -> None:
        self.cfg = cfg
        self.resume = resume
        self.out = Path(cfg.out)
        self.global_step = 0
        self.metrics_path = self.out / "metrics.jsonl"

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check inputs before any compute, then load the model, data, optimiser, scheduler."""
        from accelerate.utils import set_seed

        cfg = self.cfg
        self._check_run_dir()
        self._load_data()
        self._make_accelerator()
        set_seed(cfg.seed)
        model = self._load_model()
        optimizer, scheduler = self._make_optimiser(model)
        acc = self.accelerator
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.backbone.model = self.model
        self.deepspeed = zero_stage(acc) is not None
        if cfg.lora.enabled and not self.deepspeed:  # DeepSpeed checkpoints its engine itself
            acc.register_save_state_pre_hook(self._save_adapter_hook)
            acc.register_load_state_pre_hook(self._load_adapter_hook)
        if cfg.trackers:
            acc.init_trackers(self.out.name, config={"task": cfg.task, "lr": cfg.optim.lr})
        if self.resume:
            self._restore()

    def _check_run_dir(self) -> None:
        """Refuse a run directory holding another run (unless resuming) and a missing base."""
        cfg = self.cfg
        earlier = [p.name for p in (self.metrics_path, self.out / CHECKPOINTS_DIR) if p.exists()]
        if earlier and not self.resume:
            # Appending a new run's metrics to an old run's, and pruning checkpoints of both by
            # name, would mix two runs: refuse, and say how to continue or start elsewhere.
            raise ConfigError(
                f"{self.out} holds an earlier run ({', '.join(earlier)}): add --resume to continue it, "
                "or give another --out (or delete the folder) to start over"
            )
        self._claim_run_dir()
        if not cfg.base_model:
            raise ConfigError("base_model is empty: give the model directory to start from (--base)")
        if not Path(cfg.base_model).is_dir():
            raise ModelError(f"base model directory not found: {cfg.base_model}")

    def _claim_run_dir(self) -> None:
        """Make ``out``, refusing a folder of files no worldboot run wrote, and mark it as this
        task's run (``meta.json``) when nothing has: a recipe used as a library, without
        :class:`~worldboot.runs.RunDir`, leaves a folder that ``worldboot train --resume``
        takes up, and that other stages refuse."""
        stage = f"train-{self.cfg.task}"
        if os.environ.get("RANK", "0") != "0":  # the first process checks and writes
            self.out.mkdir(parents=True, exist_ok=True)
            return
        claim_folder(self.out, stage)
        self.out.mkdir(parents=True, exist_ok=True)
        if held_stage(self.out) is None:
            write_atomic(self.out / "meta.json", json.dumps({"stage": stage, "status": "running"}, indent=2))

    def _load_data(self) -> None:
        """The caches' mixture, checked, and (when resuming) checked against the checkpoint's,
        before the model loads (minutes for a 7B model)."""
        cfg = self.cfg
        self.data = MixedDataset(cfg.data, cfg.seed)
        if not self.data.train:
            held = f" (data.eval_fraction {cfg.data.eval_fraction:g} holds them out)" if self.data.eval else ""
            raise DataError(f"no usable training sample in {', '.join(s.cache for s in cfg.data.sources)}{held}")
        if len(self.data.fingerprints) > 1:
            first = self.data.datasets[0].cache
            other = next(ds.cache for ds in self.data.datasets if ds.cache.fingerprint != first.fingerprint)
            raise DataError(f"the caches {first.path} and {other.path} were made with different tokenizers "
                            f"({first.fingerprint}, {other.fingerprint}); tokenize them with one backbone")
        self.select_data()
        self.data_fp = self.data_fingerprint()
        if self.resume:
            path = checkpoints.resume_path(self.out, self.resume)
            checkpoints.check_intact(path)  # a file cut short: one line naming it, before the model loads
            checkpoints.check_resume_data(path, self.data_fp)

    def _make_accelerator(self) -> None:
        """accelerate (and DeepSpeed, when launched with it) for the batch the config asks."""
        cfg = self.cfg
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if _bf16_gpu() else "no"
        self.accelerator = acc = make_accelerator(mp, cfg.trackers, str(self.out))
        self.accum = accumulation_steps(cfg, acc.num_processes)
        acc.gradient_accumulation_steps = self.accum
        configure_deepspeed(acc, cfg.batch_size, cfg.micro_batch_size, self.accum, cfg.optim.max_grad_norm)

    def _load_model(self) -> torch.nn.Module:
        """The base model, checked against the caches' tokenizer, with what trains marked:
        a LoRA adapter, or every weight but the VQ."""
        from worldboot.models import load_backbone

        cfg = self.cfg
        dtype = cfg.model_dtype
        if dtype == "auto":
            dtype = "bfloat16" if _bf16_gpu() else "float32"
        self.dtype = dtype
        self.backbone = load_backbone(cfg.base_model, dtype=dtype)
        fp = self.backbone.tokenizer_fingerprint()
        if fp not in self.data.fingerprints:
            raise ModelError(
                f"the caches were tokenized with another backbone than {cfg.base_model} "
                f"(fingerprint {fp} vs {sorted(self.data.fingerprints)})"
            )
        model = self.backbone.model
        from peft import PeftModel

        if isinstance(model, PeftModel):
            # The base is a LoRA run: its adapter becomes part of the weights this run starts
            # from (load_backbone merges it the same way when it opens this run).
            model = self.backbone.model = model.merge_and_unload()
        if cfg.lora.enabled:
            model = self._add_lora(model)
        else:
            for name, p in model.named_parameters():
                p.requires_grad_(".vqmodel." not in f".{name}")
            # DeepSpeed's bf16 engine casts every parameter, the frozen image tokenizer's too (its
            # keep_in_fp32 setting keeps buffers only); the saved model takes these copies back.
            self.frozen_fp32 = {n: p.detach().clone() for n, p in model.named_parameters()
                                if not p.requires_grad and p.dtype == torch.float32}
        if cfg.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model

    def _add_lora(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model with a LoRA adapter (peft), the only weights that train."""
        from peft import get_peft_model

        cfg = self.cfg
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            return get_peft_model(model, cfg.lora.peft_config())
        except ValueError:  # peft: target modules not found in the base model
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ConfigError(
                f"config key 'lora.target_modules': {list(cfg.lora.target_modules)} match no layer of "
                f"{cfg.base_model} (its linear layers: {', '.join(linear)})"
            ) from None

    def _make_optimiser(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW over the trainable weights and the warm-up schedule, over the run's steps."""
        from transformers import get_scheduler

        cfg = self.cfg
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in trainable)
        optimizer = torch.optim.AdamW(
            trainable, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        steps_per_epoch = len(self.data.train) // cfg.batch_size
        if steps_per_epoch == 0:
            raise DataError(
                f"{len(self.data.train)} training samples make no global batch of {cfg.batch_size}; "
                "lower batch_size"
            )
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        warmup = min(cfg.optim.warmup_steps, max(0, self.total_steps // 10)) if cfg.optim.warmup_steps else 0
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.optim.scheduler]
        return optimizer, get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=self.total_steps)

    def _save_adapter_hook(self, models: list, weights: list, output_dir: str) -> None:
        # Save only the adapter (megabytes) instead of the whole base model (14 GB for Anole).
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(Path(output_dir) / ADAPTER_DIR)
        weights.clear()

    def _load_adapter_hook(self, models: list, input_dir: str) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = Path(input_dir) / ADAPTER_DIR / "adapter_model.safetensors"
        if not path.is_file():
            raise ModelError(f"checkpoint {input_dir} has no adapter weights")
        state = load_file(str(path), device=str(self.accelerator.device))
        result = set_peft_model_state_dict(self.accelerator.unwrap_model(self.model), state)
        if getattr(result, "unexpected_keys", None):
            raise ModelError(f"adapter in {input_dir} does not fit the base model: {result.unexpected_keys[:3]}")
        models.clear()

    def _restore(self) -> None:
        path = checkpoints.resume_path(self.out, self.resume)
        if path is None:
            from worldboot.runs import read_jsonl

            # A finished run: its final evaluation is logged (with held-out data), or its model
            # is saved (without: the demo's recipes hold none out).
            saved = any((self.out / d).is_dir() and any((self.out / d).iterdir()) for d in (ADAPTER_DIR, MERGED_DIR))
            final = self.metrics_path.is_file() and any(r.get("final") for _, r in read_jsonl(self.metrics_path))
            if saved or final:
                raise ConfigError(
                    f"{self.out} holds a finished run and no checkpoint to go on from (save_every was "
                    f"{self.cfg.save_every}): its model is there already; train into another --out to start over"
                )
            self.accelerator.print("no checkpoint to resume from; starting fresh")
            if self.accelerator.is_main_process:  # a run killed before its first checkpoint logged steps
                checkpoints.drop_metrics_after(self.metrics_path, 0)
            return
        state = checkpoints.read_state(path, self.cfg.task)
        try:
            # A LoRA run's DeepSpeed checkpoint leaves out the frozen base (see save_checkpoint).
            kwargs = {"load_module_strict": False} if self.deepspeed and self.cfg.lora.enabled else {}
            self.accelerator.load_state(str(path), **kwargs)
        except (pickle.UnpicklingError, EOFError, SafetensorError, KeyError, RuntimeError, OSError) as err:
            # torch.load(weights_only=True) refuses a pickled object it does not know (never
            # runs it); a file cut short ends early (a RuntimeError, or an OSError naming no
            # file): either way the checkpoint is unusable. An OSError naming a file (permission
            # denied) is the file system's, which the CLI reports as it is.
            if isinstance(err, OSError) and err.filename:
                raise
            raise checkpoints.load_failure(path, err) from None
        self.global_step = int(state["global_step"])
        if self.accelerator.is_main_process:
            checkpoints.drop_metrics_after(self.metrics_path, self.global_step)
        self.accelerator.print(f"resumed from {path} at step {self.global_step}")

    # -- data -------------------------------------------------------------------------------

    def data_fingerprint(self) -> str:
        """What a checkpoint records of the data (the samples in order, the seed and batch size
        that order them into batches), so that a resume on other data is refused."""
        return f"{self.data.fingerprint()}-{self.cfg.seed}-{self.cfg.batch_size}"

    def select_data(self) -> None:
        """Called once the caches are read, before the step count is set from them: a recipe
        that trains on part of them (world-rl's offline pairs) narrows ``self.data`` here."""

    def _global_batch(self, step: int) -> list[CacheEntry]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.data.train), generator=g)
        bs = self.cfg.batch_size
        chosen = perm[offset * bs : (offset + 1) * bs].tolist()
        return [self.data.train[i] for i in chosen]

    def _render(self, entries: list[CacheEntry]) -> list[RenderedExample]:
        cfg = self.cfg
        return [
            render_example(self.backbone, self.data.item(e), cfg.task, cfg.loss.weighting, cfg.loss.uniform_mix)
            for e in entries
        ]

    def _micro_batches(self, step: int) -> list[list[RenderedExample]]:
        acc = self.accelerator
        mine = self._global_batch(step)[acc.process_index :: acc.num_processes]
        rendered = self._render(mine)
        mb = self.cfg.micro_batch_size
        return [rendered[i : i + mb] for i in range(0, len(rendered), mb)]

    # -- training ---------------------------------------------------------------------------

    def _forward_sum(self, items: list[RenderedExample], model: Any = None) -> tuple[torch.Tensor, int]:
        from worldboot.models.lm_forward import completion_positions

        batch, weights = collate(self.backbone, items)
        batch = batch.to(self.accelerator.device)
        mask, targets, _ = completion_positions(batch.labels)
        out = (model or self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_mask=mask)
        w = weights[:, 1:][batch.labels[:, 1:].cpu() != -100].to(self.accelerator.device)
        return completion_loss_sum(out.logits, targets, w), int(targets.numel())

    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step over the global batch ``step``; returns its metrics."""
        acc = self.accelerator
        micro = self._micro_batches(step)
        local_tokens = sum(
            sum(1 for lab in r.example.labels[r.example.completion_start :] if lab != -100) for mb in micro for r in mb
        )
        total_tokens = acc.reduce(torch.tensor(float(local_tokens), device=acc.device), reduction="sum").item()
        # Scale so that DDP's mean over processes and accelerate's division by the accumulation
        # steps turn the per-micro-batch sums into sum(global batch) / tokens(global batch).
        scale = acc.num_processes * self.accum / max(total_tokens, 1.0)
        loss_sum = torch.zeros((), device=acc.device)
        self.model.train()
        for mb in micro:
            with acc.accumulate(self.model):
                s, _ = self._forward_sum(mb)
                acc.backward(s * scale)
                loss_sum += s.detach()
                if acc.sync_gradients and self.cfg.optim.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()  # once per global step, whatever the process count
        loss = acc.reduce(loss_sum, reduction="sum").item() / max(total_tokens, 1.0)
        return {"loss": loss, "tokens": total_tokens, "lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean completion loss on the held-out split (plain, and weighted when configured)."""
        if not self.data.eval:
            return {}
        acc = self.accelerator
        self.model.eval()
        mine = self.data.eval[acc.process_index :: acc.num_processes]
        tot = torch.zeros(2, device=acc.device)
        mb = max(self.cfg.micro_batch_size, 1)
        # The unwrapped model: processes may hold different numbers of held-out samples, and
        # DDP's forward would wait for the others.
        model = acc.unwrap_model(self.model)
        batches = math.ceil(len(mine) / mb)
        if zero_stage(acc) == 3:
            # ZeRO-3 gathers each layer's weights from all processes in its forward: every
            # process runs as many forwards as the busiest one (the extra ones are not counted).
            batches = math.ceil(math.ceil(len(self.data.eval) / acc.num_processes) / mb)
        for b in range(batches):
            chunk = mine[b * mb : (b + 1) * mb]
            s, n = self._forward_sum(self._render(chunk or self.data.eval[:1]), model)
            if chunk:
                tot += torch.tensor([s.item(), float(n)], device=acc.device)
        tot = acc.reduce(tot, reduction="sum")
        return {"eval_loss": (tot[0] / tot[1].clamp(min=1)).item()}

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.cfg.trackers:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def train(self, stop_after: int | None = None) -> dict[str, float]:
        """Run until ``total_steps`` (or ``stop_after`` steps, for tests of resume).

        Returns:
            The last step's metrics (and the final eval loss).
        """
        acc = self.accelerator
        last: dict[str, float] = {}
        with progress_bar(f"[bold]{self.cfg.task}", acc.is_main_process, info=True) as bar:
            task = bar.add_task("train", total=self.total_steps, completed=self.global_step, info="")
            while self.global_step < self.total_steps:
                t0 = time.perf_counter()
                metrics = self.train_step(self.global_step)
                if not math.isfinite(metrics["loss"]):
                    # Every later step, and the saved weights, would be NaN too.
                    raise ConfigError(
                        f"the loss is {metrics['loss']} at step {self.global_step + 1}: training diverged; lower "
                        f"optim.lr (now {self.cfg.optim.lr:g}) or check the data (checkpoints before it are kept)"
                    )
                self.global_step += 1
                dt = time.perf_counter() - t0
                metrics["tokens_per_s"] = metrics["tokens"] / dt if dt > 0 else 0.0
                record = {"step": self.global_step, **metrics}
                cfg = self.cfg
                if cfg.eval_every and self.global_step % cfg.eval_every == 0:
                    record.update(self.evaluate())
                if self.global_step % max(cfg.log_every, 1) == 0 or self.global_step == self.total_steps:
                    self._log(record)
                bar.update(
                    task, advance=1,
                    info=f"loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  {metrics['tokens_per_s']:.0f} tok/s",
                )
                last = record
                if cfg.save_every and self.global_step % cfg.save_every == 0:
                    self.save_checkpoint()
                if self.global_step in cfg.snapshot_steps:
                    self.save_final(checkpoints.snapshot_dir(self.out, self.global_step))
                if stop_after is not None and self.global_step >= stop_after:
                    return last
        final_eval = self.evaluate()
        last.update(final_eval)
        if final_eval:
            self._log({"step": self.global_step, **final_eval, "final": True})
        self.save_final()
        return last

    # -- saving -----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write adapter, optimiser, scheduler and RNG states; keep the newest few."""
        acc = self.accelerator
        path = checkpoints.checkpoint_dir(self.out, self.global_step)
        # The frozen base of a LoRA run is not state: DeepSpeed would write all of it (14 GB for Anole).
        kwargs = {"exclude_frozen_parameters": True} if self.deepspeed and self.cfg.lora.enabled else {}
        acc.save_state(str(path), **kwargs)
        acc.wait_for_everyone()  # every process's files (its random state) are in before the state file
        if acc.is_main_process:
            # Written last: marks the checkpoint finished.
            checkpoints.write_state(path, self.global_step, self.cfg.task, self.cfg.base_model, self.data_fp)
            checkpoints.prune(self.out, self.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    def save_final(self, folder: Path | None = None) -> Path:
        """Write the trained model: the adapter (LoRA) or the whole model (full fine-tune), into
        the run's ``adapter/`` or ``merged/``, or into ``folder`` (a snapshot)."""
        acc = self.accelerator
        folder = folder or self.out / (ADAPTER_DIR if self.cfg.lora.enabled else MERGED_DIR)
        acc.wait_for_everyone()
        with gathered(acc, self.model):  # whole weights under ZeRO-3, on every process
            if acc.is_main_process:
                model = acc.unwrap_model(self.model)
                if self.cfg.lora.enabled:
                    model.save_pretrained(folder)
                    meta = {"task": self.cfg.task, "base_model": str(Path(self.cfg.base_model).resolve())}
                    write_atomic(folder / "worldboot.json", json.dumps(meta, indent=2))
                else:
                    self.backbone.model = model
                    with _in_fp32(model, getattr(self, "frozen_fp32", {})):
                        self.backbone.save(folder)
                    self.backbone.model = self.model
        acc.wait_for_everyone()
        return folder

    def merge(self) -> Path:
        """Write base + adapter merged into one model directory (``merged/``), from the saved
        adapter reloaded outside the training engine (so the same under DDP and ZeRO-3)."""
        acc = self.accelerator
        if acc.is_main_process and self.cfg.lora.enabled:
            from worldboot.models import load_backbone

            with unpartitioned_loading(acc):
                bb = load_backbone(self.out / ADAPTER_DIR, dtype=self.dtype)
            bb.model = bb.model.merge_and_unload()
            bb.save(self.out / MERGED_DIR)
        acc.wait_for_everyone()
        return self.out / MERGED_DIR

    def cleanup(self) -> None:
        """End trackers and the process group (without it, rank 1 aborts at exit on CPU)."""
        acc = getattr(self, "accelerator", None)
        if acc is None:
            return
        if self.cfg.trackers:
            acc.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def _in_fp32(model: torch.nn.Module, frozen: dict[str, torch.Tensor]) -> Iterator[None]:
    """``model`` with its frozen parameters back in their float32 values while in the block
    (those a bf16 engine cast: the image tokenizer stays as it was loaded, never rounded)."""
    swapped = []
    for name, p in model.named_parameters():
        if name in frozen and p.dtype != torch.float32:
            swapped.append((p, p.data))
            p.data = frozen[name].to(p.device)
    try:
        yield
    finally:
        for p, data in swapped:
            p.data = data
