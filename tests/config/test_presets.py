"""Every shipped YAML under configs/ opens with the command that runs it and loads into its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldboot.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p for p in (ROOT / "configs").rglob("*.yaml"))


def _loader(command: str, path: Path):
    """The config class (or loader) for the command a preset's first line shows."""
    words = command.split()
    if words[:2] == ["accelerate", "launch"]:
        if path.parent.name == "accelerate":
            from accelerate.commands.config.config_args import ClusterConfig

            return lambda p: ClusterConfig.from_yaml_file(p)
        words = ["worldboot", *words[words.index("worldboot.cli") + 1 :]]
    assert words[0] == "worldboot", f"first line must be a worldboot or accelerate command: {command}"
    verb = words[1:3]
    if verb[0] == "train":
        from worldboot.train.resolve import resolve_train_config

        return lambda path: resolve_train_config(path, task=verb[1])
    elif verb[0] == "generate":
        from worldboot.infer.generate import GenerateConfig as cls
    elif verb[0] == "rollout":
        from worldboot.infer.rollout import RolloutConfig as cls
    elif verb[0] == "keyframes":
        from worldboot.mining.keyframes import KeyframeConfig as cls
    elif verb == ["evaluate", "actions"]:
        from worldboot.evaluate.actions import ActionsConfig as cls
    elif verb == ["evaluate", "spatial"]:
        from worldboot.evaluate.spatial import SpatialConfig as cls
    elif verb[0] == "evaluate":
        from worldboot.evaluate.run import EvaluateConfig as cls
    elif verb[0] == "serve":
        from worldboot.study.spec import load_study

        return load_study
    elif verb[0] == "base":
        from worldboot.base import BaseRecipe as cls
    elif verb[0] == "demo":
        from worldboot.demo import DemoConfig as cls
    else:
        raise AssertionError(f"no loader known for '{command}': add it to tests/unit/test_presets.py")
    return lambda path: load_config(cls, path)


def test_there_are_presets():
    assert len(PRESETS) >= 10


@pytest.mark.parametrize("path", PRESETS, ids=[str(p.relative_to(ROOT / "configs")) for p in PRESETS])
def test_preset_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path} must open with a comment showing the command that runs it"
    command = first[2:].strip()
    assert str(path.relative_to(ROOT)) in command or "--config" not in command or path.name in command
    assert _loader(command, path)(path) is not None


def test_demo_presets_are_the_packaged_yaml_files():
    """`worldboot demo --preset NAME` reads the package's configs/demo/NAME.yaml: the one copy."""
    from worldboot.base import PRESETS as BASE_PRESETS
    from worldboot.config import preset_file
    from worldboot.demo import PRESETS as DEMO_PRESETS
    from worldboot.demo import load_demo_config

    for name in DEMO_PRESETS:
        path = preset_file("demo", name)
        assert path.resolve() == (ROOT / "configs" / "demo" / f"{name}.yaml").resolve()
        # Each names a world base the package ships: the paper's, one base for every preset.
        assert load_demo_config(name).base_preset == "paper" in BASE_PRESETS
    assert load_demo_config("paper").train_per_subset > load_demo_config("smoke").train_per_subset
    cfg = load_demo_config("smoke", overrides=["cdm.max_steps=7", "cwm.config=configs/demo/cdm.yaml"])
    assert cfg.cdm.overrides[-1] == "max_steps=7" and cfg.cwm.config == "configs/demo/cdm.yaml"


def test_unknown_demo_preset_is_a_config_error():
    from worldboot.demo import load_demo_config
    from worldboot.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown demo preset 'huge'"):
        load_demo_config("huge")


@pytest.mark.parametrize("key", ["rl", "dpo"])
def test_a_reward_row_without_prompts_names_its_own_key(key):
    from worldboot.demo import load_demo_config
    from worldboot.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{key}\.prompts is empty"):
        load_demo_config("smoke", overrides=[f"{key}.enabled=true", f"{key}.prompts=[]"])
    assert load_demo_config("smoke", overrides=[f"{key}.prompts=[]"]) is not None  # off: no prompts needed


def test_a_training_mistake_names_its_run_before_any_stage():
    from worldboot.demo import load_demo_config
    from worldboot.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^dpo \(configs/demo/world_dpo.yaml\): beta must be greater than 0"):
        load_demo_config("smoke", overrides=["dpo.enabled=true", "dpo.beta=0"])
    assert load_demo_config("smoke", overrides=["rl.beta=0"]).rl.overrides == ["beta=0"]  # GRPO without KL


def test_cli_offers_every_preset():
    """The parsers list the preset names without importing torch; they must list them all."""
    from worldboot.base import PRESETS as BASE_PRESETS
    from worldboot.cli import build_parser
    from worldboot.commands import base as base_command
    from worldboot.demo import PRESETS as DEMO_PRESETS

    assert tuple(base_command.PRESETS) == tuple(BASE_PRESETS)
    parser = build_parser()
    demo = parser._subparsers._group_actions[0].choices["demo"]
    preset = next(a for a in demo._actions if a.dest == "preset")
    assert tuple(preset.choices) == tuple(DEMO_PRESETS)
