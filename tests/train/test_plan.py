"""``worldboot plan``: its model states are DeepSpeed's estimators' (called here directly), its
activations what a real CPU forward of the tiny model keeps, and its counts the real ones."""

from __future__ import annotations

import json

import pytest
import torch

from worldboot.cli import main
from worldboot.train.config import DataSettings, LoraSettings, SourceSettings
from worldboot.train.plan import layer_activation_bytes, make_plan, model_config
from worldboot.train.sft_config import SFTConfig


def _cfg(cache_dir, lora: bool = True, **kw) -> SFTConfig:
    return SFTConfig(task="world", batch_size=8, micro_batch_size=2, lora=LoraSettings(enabled=lora),
                     data=DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=0.1), **kw)


def test_model_states_are_deepspeeds_estimates(tiny_dir, cache_dir):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from worldboot.models import load_backbone

    model = load_backbone(tiny_dir).model
    total = sum(p.numel() for p in model.parameters())
    vq = sum(p.numel() for n, p in model.named_parameters() if ".vqmodel." in f".{n}")
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in model.model.layers)
    plan = make_plan(_cfg(cache_dir, lora=False), str(tiny_dir), gpus=4, gpu_gib=80)
    assert (plan.total_params, plan.trainable_params) == (total, total - vq)  # every weight but the VQ
    states = {m.strategy: m.model_states for m in plan.memory}
    t = total - vq
    assert states["zero2"] == vq * 4 + estimate_zero2_model_states_mem_needs(t, 4, 1, cpu_offload=False)[1]
    assert states["zero3"] == vq * 4 // 4 + estimate_zero3_model_states_mem_needs(
        t, largest, 4, 1, cpu_offload=False, cpu_offload_params=False)[1]
    assert states["ddp"] == vq * 4 + t * 8  # bf16 weights and gradients, Adam's moments in bf16


def test_ddp_model_states_are_what_a_real_lora_step_holds(tiny_dir, cache_dir):
    """One real AdamW step of the tiny model with the config's LoRA (peft, on CPU, bf16 base):
    the bytes of every weight, gradient and optimiser state equal the plan's DDP figure."""
    from peft import LoraConfig, get_peft_model

    from worldboot.models import load_backbone

    cfg = _cfg(cache_dir)
    plan = make_plan(cfg, str(tiny_dir), gpus=1, gpu_gib=80)
    model = load_backbone(tiny_dir, dtype="bfloat16").model
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=0.0,
                                             target_modules=list(cfg.lora.target_modules)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == plan.trainable_params
    opt = torch.optim.AdamW(trainable)
    sum(p.float().sum() for p in trainable).backward()
    opt.step()
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    held += sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    held += sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.dim())
    assert {m.strategy: m.model_states for m in plan.memory}["ddp"] == held


def test_activations_are_what_a_real_forward_keeps(tiny_dir, cache_dir):
    """The meta-device measure of one layer equals what a real CPU forward of the tiny model's
    layer keeps for backward (the same eager attention), bytes for bytes. In float32: in bf16
    the CPU's layer norm keeps its statistics in bf16 where the meta kernel (as CUDA's) keeps
    float32, 0.3 % of the layer's bytes here."""
    from worldboot.models import load_backbone
    from worldboot.train.plan import _param_keys, _saved_bytes

    cfg = _cfg(cache_dir, lora=False)
    config, _, _ = model_config(str(tiny_dir))
    sequence = 150
    planned = layer_activation_bytes(config, cfg, sequence, torch.float32, attention="eager")
    model = load_backbone(tiny_dir, dtype="float32").model
    model.config._attn_implementation = "eager"
    model.train()
    layer = model.model.layers[0]
    x = torch.randn(1, sequence, config.hidden_size, requires_grad=True)
    pos = torch.arange(sequence)[None]
    pe = model.model.rotary_emb(x, pos)
    real = _saved_bytes(lambda: layer(x, attention_mask=None, position_embeddings=pe, position_ids=pos),
                        _param_keys(model))
    assert planned == real > 0
    # A fused kernel keeps no s x s scores: less, and linear in the sequence.
    flash = [layer_activation_bytes(config, cfg, s, torch.float32) for s in (150, 300)]
    assert flash[0] < planned and flash[1] == 2 * flash[0]


def test_the_plan_counts_the_mixture_and_its_steps(tiny_dir, cache_dir):
    from worldboot.train.data import MixedDataset

    cfg = _cfg(cache_dir, epochs=3.0)
    plan = make_plan(cfg, str(tiny_dir), gpus=2, gpu_gib=24)
    n = len(MixedDataset(cfg.data, cfg.seed).train)
    assert plan.examples == plan.mixture[0]["train"] == n
    assert (plan.steps_per_epoch, plan.total_steps) == (n // 8, 3 * (n // 8))
    # A world example's loss positions are its labelled tokens, the target's codes.
    from PIL import Image

    from worldboot.models import load_backbone

    bb = load_backbone(tiny_dir)
    codes = bb.encode_images([Image.new("RGB", (bb.image_size, bb.image_size), (200, 30, 30))]).codes
    assert plan.loss_positions == sum(t != -100 for t in bb.world_example(codes[0], "paint it", codes[0]).labels)
    m = {m.strategy: m for m in plan.memory}["ddp"]
    # The largest micro-batch that fits is the one whose activations still leave the reserve free.
    per = m.activations // cfg.micro_batch_size
    free = (24 - 2.0) * 1024**3 - m.model_states
    assert m.max_micro_batch == int(free // per) and m.fits


def test_anole_7b_is_chameleon_7b_with_the_papers_lora():
    from worldboot.train.resolve import resolve_train_config

    cfg = resolve_train_config("configs/anole7b/cft.yaml", task="world")
    plan = make_plan(cfg, "anole-7b", gpus=4, gpu_gib=80, examples=40000)
    assert 7.0e9 < plan.total_params < 7.1e9
    assert plan.trainable_params == 4 * 32 * 16 * (4096 + 4096)  # r 16 on q, k, v, o of 32 layers
    assert plan.sequence == 2 * (1024 + 2) + 64 + 2 and plan.loss_positions == 1024  # the codes, labelled
    assert plan.steps_per_epoch == 40000 // 96 and plan.total_steps == 40 * (40000 // 96)
    assert plan.paper["gpu_hours"] == 200  # C-FT, Appendix L.2
    zero3 = {m.strategy: m for m in plan.memory}["zero3"]
    assert zero3.model_states < {m.strategy: m for m in plan.memory}["zero2"].model_states


def test_the_command_prints_json_and_refuses_in_one_line(tiny_dir, cache_dir, capsys):
    assert main(["plan", "--config", "configs/demo/cdm.yaml", "--base", str(tiny_dir), "--cache", str(cache_dir),
                 "--gpus", "2", "--gpu-memory", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "dynamics" and [m["strategy"] for m in out["memory"]] == ["ddp", "zero2", "zero3"]
    assert main(["plan", "--config", "configs/demo/cdm.yaml", "--base", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "unknown (build the caches" in out  # the preset lists no cache: nothing to count
    assert "The paper" not in out  # its figures are the 7B model's
    for argv, message in ((["--base", "/nowhere"], "not a model directory"), ([], "names no base_model"),
                          (["--base", str(tiny_dir), "--gpus", "0"], "--gpus must be at least 1"),
                          (["--base", str(tiny_dir), "--gpu-memory", "nan"], "--gpu-memory a number above 0"),
                          (["--base", str(tiny_dir), "--gpu-memory", "inf"], "--gpu-memory a number above 0"),
                          (["--base", str(tiny_dir), "--examples", "-1"], "--examples must be at least 1"),
                          (["--base", str(tiny_dir), "--text-tokens", "-1"], "--text-tokens at least 0")):
        assert main(["plan", "--config", "configs/demo/cdm.yaml", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["world_rl", "dynamics_rl"])
def test_reward_optimisation_plans_a_group_per_prompt(tiny_dir, cache_dir, name):
    from worldboot.train.resolve import resolve_train_config

    cfg = resolve_train_config(f"configs/demo/{name}.yaml", caches=[str(cache_dir)])
    plan = make_plan(cfg, str(tiny_dir), gpus=1, gpu_gib=24)
    one = make_plan(resolve_train_config(f"configs/demo/{name}.yaml", ["group_size=1"], caches=[str(cache_dir)]),
                    str(tiny_dir), gpus=1, gpu_gib=24)
    assert plan.memory[0].activations == cfg.group_size * one.memory[0].activations
