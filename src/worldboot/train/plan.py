"""``worldboot plan``: what a training job will need, worked out before it runs, on a machine
without a GPU: the mixture and its steps, the parameters, and the memory per GPU under DDP,
ZeRO-2 and ZeRO-3.

The model is built on PyTorch's meta device from its config (a model directory's
``config.json``, Chameleon, causal LM + VQGAN or Emu3, or a named one such as ``anole-7b``:
transformers' own ``ChameleonConfig``, whose defaults are Chameleon-7B's), so no weight is read
or allocated.

* **Model states** (weights, gradients, optimiser) come from DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``) for
  the trainable parameters, plus the frozen weights in their dtype: LoRA keeps the base frozen
  in bf16, which the estimators, written for full fine-tuning, do not model. DDP keeps every
  trainable parameter's fp32 weight, gradient and Adam moments (16 bytes) on each GPU.
* **Activations** are measured, not modelled: one decoder layer of the real architecture (with
  its LoRA adapters) runs forward on the meta device under autograd's saved-tensor hooks, which
  see every tensor kept for backward. Attention is the fused kernel of a GPU
  (:func:`_flash_stand_in` keeps what FlashAttention keeps: q, k, v, the output and the
  log-sum-exp, never the ``s x s`` scores); ``attention="eager"`` measures transformers' eager
  path instead (what a CPU run keeps, which the tests compare with a real CPU forward). With
  gradient checkpointing a layer keeps only its input, and one layer's activations live again
  during its backward. The output layer's activations are measured the same way, for the loss
  positions only, as :func:`~worldboot.models.lm_forward.world_forward` computes them.

Not estimated: the CUDA context and the allocator's fragmentation (:data:`RESERVE_GIB` is kept
free for them), and DeepSpeed's communication buckets.

(Just over 400 lines: the plan, its memory estimate per strategy and the trainer's batch check
are one computation over one config and model; the estimate alone is most of the file.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from worldboot.errors import ConfigError, ModelError
from worldboot.train.config import TrainConfig, accumulation_steps

#: GiB of each GPU left for the CUDA context, allocator fragmentation and DeepSpeed's buffers.
RESERVE_GIB = 2.0
GIB = 1024**3
#: Named model configs (no weights): the base models the presets are written for.
NAMED = ("anole-7b",)
#: The paper's own figures for its three Anole-7B runs (Appendix L.2: 4 H100 80GB; inference on
#: one A100 80GB, about 1 GPU hour per model for the 250 AURORA-BENCH test samples).
PAPER = {"gpus": 4, "gpu_gib": 80, "gpu_hours": {"cdm": 100, "cft": 200, "cwm": 400},
         "seconds_per_sample": 3600 / 250, "seconds_per_sample_best_of_8": 8 * 3600 / 250}


@dataclass
class MemoryPlan:
    """Bytes per GPU under one strategy.

    Attributes:
        strategy: ``ddp``, ``zero2`` or ``zero3``.
        model_states: Weights, gradients and optimiser states.
        activations: At the config's micro-batch, without gradient checkpointing.
        activations_checkpointed: The same with gradient checkpointing.
        fits: Whether model states and activations (with the config's
            ``gradient_checkpointing``) leave :data:`RESERVE_GIB` free.
        max_micro_batch: The largest micro-batch that fits without gradient checkpointing
            (0: not even one).
        max_micro_batch_checkpointed: The same with gradient checkpointing.
    """

    strategy: str
    model_states: int
    activations: int
    activations_checkpointed: int
    fits: bool
    max_micro_batch: int
    max_micro_batch_checkpointed: int


@dataclass
class Plan:
    """What a job will need. Every byte figure is per GPU.

    Attributes:
        task: The config's task.
        model: What was planned (a directory or a named config).
        mixture: Per source: name, cache, training examples after caps and repeats (None:
            the cache is not built).
        examples: Training examples per epoch (None: unknown).
        steps_per_epoch: Optimiser steps per epoch (None: unknown).
        total_steps: Steps of the run (None: unknown).
        total_params: Every parameter, the image tokenizer's included.
        trainable_params: Those the run trains (LoRA's adapters, or every weight).
        sequence: Tokens per example (two images, the action text, markers).
        loss_positions: Tokens whose logits the loss needs.
        gpus: GPUs the plan is for.
        gpu_gib: Memory of each.
        memory: One :class:`MemoryPlan` per strategy.
        paper: The paper's own figures for this run, where it gives them (Chameleon-7B models).
        accumulation_steps: Micro-batches each GPU accumulates per step (0: not runnable).
        refusal: Why ``worldboot train`` would refuse this config on ``gpus`` GPUs, in its own
            words (empty: it would run); the memory figures are given all the same.
    """

    task: str
    model: str
    mixture: list[dict[str, Any]]
    examples: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    total_params: int
    trainable_params: int
    sequence: int
    loss_positions: int
    gpus: int
    gpu_gib: float
    memory: list[MemoryPlan] = field(default_factory=list)
    paper: dict[str, Any] = field(default_factory=dict)
    accumulation_steps: int = 0
    refusal: str = ""

    @property
    def runnable(self) -> bool:
        """Whether ``worldboot train`` would take the config and one strategy fits in memory."""
        return not self.refusal and any(m.fits for m in self.memory)

    def to_json(self) -> dict[str, Any]:
        """The plan as plain data (``worldboot plan --json``), with ``runnable``."""
        return {**asdict(self), "runnable": self.runnable}


def model_config(model: str) -> tuple[Any, int, int]:
    """The transformers config of a model directory or a named config, the tokens one image
    takes in a sequence, its layout tokens included (Chameleon's: begin, the codes, end; Emu3's:
    begin, the grid as text, its image marker, each row of codes and its row end, end of frame,
    end), and its codes (a world model's loss positions: the layout tokens carry no label).

    Raises:
        ModelError: For a directory without ``config.json`` or an unknown name, or one whose
            ``config.json`` or ``worldboot.json`` is not a model's (naming the file and the key).
    """
    from transformers import ChameleonConfig

    from worldboot.models.folder import read_config, read_meta

    if model == "anole-7b":
        # transformers' defaults are Chameleon-7B's; the vocabulary map only needs the image marker.
        config = ChameleonConfig(vocabulary_map={"<image>": 8711})
        codes = _grid(config.vq_config.resolution, config.vq_config.channel_multiplier) ** 2
        return config, codes + 2, codes
    path = Path(model)
    if not (path / "config.json").is_file():
        raise ModelError(f"{model}: not a model directory (no config.json) nor a named config ({', '.join(NAMED)})")
    config = read_config(path)
    meta = read_meta(path)
    vq = getattr(config, "vq_config", None)
    if config.model_type == "emu3":
        return (config, *_emu3_image_tokens(path, config, meta))
    size = int(meta.get("image_size") or getattr(vq, "resolution", 512))
    mult = getattr(vq, "channel_multiplier", None) or [1, 1, 2, 2, 4]  # Chameleon's VQGAN (Liquid's too)
    codes = _grid(size, mult) ** 2
    return config, codes + 2, codes


def _emu3_image_tokens(path: Path, config: Any, meta: dict[str, Any]) -> tuple[int, int]:
    """An Emu3 image's tokens and codes at the directory's image shape (``worldboot.json``, else
    :data:`~worldboot.models.emu3.DEFAULT_SHAPE`), as :class:`~worldboot.models.emu3.Emu3Backbone`
    lays it out; the grid's text is counted with the directory's own tokenizer."""
    from transformers import AutoTokenizer

    from worldboot.models.emu3 import DEFAULT_SHAPE

    height, width = (int(v) for v in (meta.get("image_shape") or DEFAULT_SHAPE))
    rows, cols = _grid(height, config.vq_config.channel_multiplier), _grid(width, config.vq_config.channel_multiplier)
    try:
        grid_text = len(AutoTokenizer.from_pretrained(path, local_files_only=True)(
            f"{rows}*{cols}", add_special_tokens=False)["input_ids"])
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: its tokenizer does not load ({e})") from e
    return 1 + grid_text + 1 + rows * (cols + 1) + 2, rows * cols


def _grid(size: int, channel_multiplier: list[int]) -> int:
    return size // 2 ** (len(channel_multiplier) - 1)


def text_config(config: Any) -> Any:
    """The language model's config: Emu3 nests it (``text_config``), Chameleon does not."""
    return getattr(config, "text_config", None) or config


def meta_model(config: Any) -> torch.nn.Module:
    """The model of ``config`` on the meta device: shapes, no memory."""
    from transformers import AutoModelForCausalLM, ChameleonForConditionalGeneration

    with torch.device("meta"):
        if config.model_type == "chameleon":
            return ChameleonForConditionalGeneration(config)
        if config.model_type == "emu3":
            from transformers import Emu3ForConditionalGeneration

            return Emu3ForConditionalGeneration(config)
        return AutoModelForCausalLM.from_config(config)


def with_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """``model`` with the config's LoRA adapters (peft's own, on the meta device), or as is."""
    if not cfg.lora.enabled:
        return model
    from peft import get_peft_model

    return get_peft_model(model, cfg.lora.peft_config())


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and hasattr(module[0], "self_attn"):
            return module
    raise ModelError(f"{type(model).__name__}: no decoder layers found to measure")


class _FlashSaves(torch.autograd.Function):
    """What a fused attention kernel keeps for backward: q, k, v, the output and the log-sum-exp
    per query (float32), never the ``s x s`` scores. Only its forward ever runs (on meta)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover - never run
        raise NotImplementedError("the plan's attention stand-in only measures what a forward keeps")


def _flash_stand_in(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                    **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface (``[b, heads, s, d]`` in, ``[b, s, heads, d]`` out)."""
    return _FlashSaves.apply(query, key, value).transpose(1, 2).contiguous(), None


def _saved_bytes(fn: Any, params: set[int]) -> int:
    """Bytes of the distinct storages autograd keeps while ``fn()`` runs, parameters left out."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr() if t.device.type != "meta" else storage._cdata
        if key not in params:
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _param_keys(model: torch.nn.Module) -> set[int]:
    return {p.untyped_storage()._cdata if p.device.type == "meta" else p.untyped_storage().data_ptr()
            for p in model.parameters()}


def layer_activation_bytes(config: Any, cfg: TrainConfig, sequence: int, dtype: torch.dtype,
                           attention: str = "flash") -> int:
    """Bytes one decoder layer keeps for backward, per example of ``sequence`` tokens, measured
    on a one-layer copy of the architecture on the meta device (with the config's LoRA)."""
    import copy

    from transformers import AttentionInterface

    one = copy.deepcopy(config)
    text_config(one).num_hidden_layers = 1
    if attention == "flash":
        AttentionInterface.register("worldboot_plan", _flash_stand_in)
        one._attn_implementation = "worldboot_plan"
    else:
        one._attn_implementation = attention
    model = with_lora(meta_model(one).to(dtype), cfg)
    model.train()
    layer = _layers(model)[0]
    rotary = next(m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding"))
    x = torch.empty(1, sequence, text_config(config).hidden_size, device="meta", dtype=dtype, requires_grad=True)
    pos = torch.arange(sequence, device="meta")[None]
    pe = rotary(x, pos)
    return _saved_bytes(lambda: layer(x, attention_mask=None, position_embeddings=pe, position_ids=pos),
                        _param_keys(model))


def head_activation_bytes(config: Any, loss_positions: int, dtype: torch.dtype) -> int:
    """Bytes the output layer and the loss keep for backward, per example, for the loss
    positions only (measured on meta as the layers are)."""
    text = text_config(config)
    head = torch.nn.Linear(text.hidden_size, text.vocab_size, bias=False, device="meta", dtype=dtype)
    h = torch.empty(1, loss_positions, text.hidden_size, device="meta", dtype=dtype, requires_grad=True)
    labels = torch.zeros(loss_positions, dtype=torch.long, device="meta")

    def run() -> None:
        logits = head(h).float()
        torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels)

    return _saved_bytes(run, _param_keys(head))


def _mixture(cfg: TrainConfig, examples: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """Per source the training examples after caps and repeats (the training run's own
    :class:`~worldboot.train.data.MixedDataset`), or None where a cache is not built yet."""
    from worldboot.train.data import MixedDataset

    if cfg.data.sources and all(Path(s.cache).exists() for s in cfg.data.sources):
        rows = MixedDataset(cfg.data, cfg.seed).summary(cfg.data)
        return rows, sum(r["train"] for r in rows)
    rows = [{"name": s.name or Path(s.cache).name, "cache": s.cache, "max_per_subset": dict(s.max_per_subset),
             "repeats": s.repeats, "train": None, "held_out": None} for s in cfg.data.sources]
    return rows, examples


def make_plan(cfg: TrainConfig, model: str, gpus: int, gpu_gib: float, *, examples: int | None = None,
              text_tokens: int = 64, attention: str = "flash") -> Plan:
    """The plan of ``cfg`` on ``model`` (a directory or a named config) over ``gpus`` GPUs of
    ``gpu_gib`` GiB each, in bf16 as on the paper's GPUs.

    Args:
        cfg: The resolved training config (:func:`~worldboot.train.resolve.resolve_train_config`).
        model: A model directory, or a name of :data:`NAMED`.
        gpus: GPUs of the job (processes).
        gpu_gib: Memory of each GPU.
        examples: Training examples per epoch, when the caches are not built yet.
        text_tokens: Tokens of an action text (with the prompt's words).
        attention: ``flash`` (a fused kernel, as on GPUs) or a transformers implementation
            (``eager``, ``sdpa``) measured as it runs on this machine.

    Raises:
        ModelError: The model cannot be found or measured.
    """
    try:  # the trainer's own check, so the plan refuses what the run would
        accum, refusal = accumulation_steps(cfg, gpus), ""
    except ConfigError as err:
        accum, refusal = 0, str(err)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from worldboot.models.folder import check_shapes

    config, image_tokens, image_codes = model_config(model)
    text = text_config(config)
    dtype = torch.float32 if cfg.model_dtype == "float32" else torch.bfloat16
    w = torch.finfo(dtype).bits // 8
    bare = meta_model(config)
    if Path(model).is_dir():  # a config that does not fit its weights: refused as train would
        check_shapes(Path(model), bare)
    full = with_lora(bare, cfg)
    total = sum(p.numel() for p in full.parameters())
    vq = sum(p.numel() for n, p in full.named_parameters() if ".vqmodel." in f".{n}")
    if cfg.lora.enabled:
        trainable = sum(p.numel() for n, p in full.named_parameters() if "lora_" in n)
        per_trainable = 16  # peft keeps adapters in float32: weight, gradient, two Adam moments
    else:
        trainable = total - vq
        per_trainable = 16 if w == 4 else 8
    frozen_bytes = (total - trainable - vq) * w + vq * 4  # the image tokenizer stays float32
    layers = _layers(full)
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in layers)

    world = cfg.task in ("world", "world-rl")
    sequence = 2 * image_tokens + text_tokens + 2
    loss_positions = image_codes if world else text_tokens
    per_layer = layer_activation_bytes(config, cfg, sequence, dtype, attention)
    head = head_activation_bytes(config, loss_positions, dtype)
    n_layers = len(layers)
    per_example = n_layers * per_layer + head
    per_example_ckpt = n_layers * sequence * text.hidden_size * w + per_layer + head
    group = getattr(cfg, "group_size", 1)  # reward optimisation forwards a group of candidates a prompt
    sequences = cfg.micro_batch_size * group

    states = {
        "ddp": frozen_bytes + trainable * per_trainable,
        "zero2": frozen_bytes + estimate_zero2_model_states_mem_needs(trainable, gpus, 1, cpu_offload=False)[1],
        "zero3": frozen_bytes // gpus + estimate_zero3_model_states_mem_needs(
            trainable, largest, gpus, 1, cpu_offload=False, cpu_offload_params=False)[1],
    }
    free = (gpu_gib - RESERVE_GIB) * GIB
    memory = []
    for name, st in states.items():
        act, act_ckpt = per_example * sequences, per_example_ckpt * sequences
        used = act_ckpt if cfg.gradient_checkpointing else act
        memory.append(MemoryPlan(
            name, int(st), int(act), int(act_ckpt), st + used <= free,
            max(0, int((free - st) // (per_example * group))), max(0, int((free - st) // (per_example_ckpt * group)))))

    mixture, n = _mixture(cfg, examples)
    per_epoch = n // cfg.batch_size if n else None
    total_steps = cfg.max_steps or (max(1, math.ceil(cfg.epochs * per_epoch)) if per_epoch else None)
    chameleon_7b = config.model_type == "chameleon" and (text.hidden_size, n_layers) == (4096, 32)
    return Plan(cfg.task, model, mixture, n, per_epoch, total_steps, total, trainable, sequence, loss_positions,
                gpus, gpu_gib, memory, _paper(cfg, total_steps) if chameleon_7b else {}, accum, refusal)


def _paper(cfg: TrainConfig, total_steps: int | None) -> dict[str, Any]:
    """The paper's own figures for the run this config is (its Anole-7B CDM, C-FT or CWM)."""
    if cfg.task == "dynamics":
        run = "cdm"
    elif cfg.task == "world":
        run = "cwm" if getattr(cfg, "loss", None) is not None and cfg.loss.weighting == "l2" else "cft"
    else:
        return {}
    hours = PAPER["gpu_hours"][run]
    out = {"run": run, "gpus": PAPER["gpus"], "gpu_gib": PAPER["gpu_gib"], "gpu_hours": hours,
           "seconds_per_sample": PAPER["seconds_per_sample"],
           "seconds_per_sample_best_of_8": PAPER["seconds_per_sample_best_of_8"]}
    if total_steps:
        out["gpu_seconds_per_step"] = hours * 3600 / total_steps
    return out
