"""One config beside each trainer (as TRL): the task and the objective pick the class, each field
is documented, and the old single ``rl:`` section is refused with where its keys went."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from worldboot.errors import ConfigError
from worldboot.train.config import TrainConfig
from worldboot.train.resolve import CONFIGS, resolve_train_config
from worldboot.train.rl_config import DPOConfig, GRPOConfig
from worldboot.train.sft_config import SFTConfig


@pytest.mark.parametrize(("preset", "task", "cls"), [
    ("configs/demo/cdm.yaml", "dynamics", SFTConfig),
    ("configs/demo/cwm.yaml", "world", SFTConfig),
    ("configs/demo/world_rl.yaml", "world-rl", GRPOConfig),
    ("configs/demo/world_dpo.yaml", "world-rl", DPOConfig),
    ("configs/demo/dynamics_rl.yaml", "dynamics-rl", GRPOConfig),
    ("configs/anole7b/world_dpo.yaml", "world-rl", DPOConfig),
])
def test_the_preset_picks_its_config_class(preset, task, cls):
    cfg = resolve_train_config(preset, task=task)
    assert type(cfg) is cls and cfg.task == task
    assert type(resolve_train_config(None, task="world-rl", objective="dpo")) is DPOConfig
    assert type(resolve_train_config(None, ["objective=dpo"], task="dynamics-rl")) is DPOConfig


def test_beta_means_each_objectives_own():
    assert resolve_train_config("configs/demo/world_rl.yaml").beta == 0.04  # GRPO's KL coefficient
    assert resolve_train_config("configs/demo/world_dpo.yaml").beta == 0.1  # DPO's temperature
    assert resolve_train_config("configs/demo/world_rl.yaml", ["beta=0.0"]).beta == 0.0  # GRPO without KL
    with pytest.raises(ConfigError, match="beta must be greater than 0"):  # DPO's cannot be 0
        resolve_train_config("configs/demo/world_dpo.yaml", ["beta=0.0"])


def test_an_objective_against_the_presets_own_is_refused():
    with pytest.raises(ConfigError, match=r"world_rl.yaml is a grpo preset .* not dpo: use a dpo preset"):
        resolve_train_config("configs/demo/world_rl.yaml", task="world-rl", objective="dpo")
    with pytest.raises(ConfigError, match=r"world_dpo.yaml is a dpo preset .* configs/demo/world_rl.yaml\)"):
        resolve_train_config("configs/demo/world_dpo.yaml", ["objective=grpo"])
    with pytest.raises(ConfigError, match="unknown config key 'max_new_tokenz'"):
        resolve_train_config("configs/demo/dynamics_rl.yaml", ["max_new_tokenz=3"])
    with pytest.raises(ConfigError, match="unknown config key 'group_size'"):  # not a fine-tuning setting
        resolve_train_config("configs/demo/cdm.yaml", ["group_size=3"])


def test_the_old_rl_section_says_where_its_keys_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("task: world-rl\nrl: {group_size: 8, dpo_beta: 0.2}\n")
    with pytest.raises(ConfigError, match=r"old.yaml: the rl: section is gone.*rl.group_size -> group_size, "
                                          r"rl.dpo_beta -> beta \(in a DPO config\)"):
        resolve_train_config(old)
    with pytest.raises(ConfigError, match=r"^the rl: section is gone.*rl.beta -> beta \(in a GRPO config\)"):
        resolve_train_config("configs/demo/world_rl.yaml", ["rl.beta=0.1"])


def test_a_config_of_another_class_is_refused_before_training(tmp_path):
    from worldboot.train.run import run_training

    with pytest.raises(ConfigError, match="task world trains with a SFTConfig, got a TrainConfig"):
        run_training(TrainConfig(task="world", out=str(tmp_path / "run")))
    with pytest.raises(ConfigError, match="task world-rl trains with a DPOConfig or GRPOConfig, got a SFTConfig"):
        run_training(SFTConfig(task="world-rl", out=str(tmp_path / "run")))  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def _documented(cls: type) -> set[str]:
    """Field names in the ``Attributes:`` sections of ``cls`` and its bases' docstrings."""
    names = set()
    for klass in cls.__mro__:
        doc = inspect.getdoc(klass) or ""
        if "Attributes:" in doc:
            section = doc.split("Attributes:", 1)[1]
            names |= {line.strip().split(":")[0] for line in section.splitlines()
                      if line.startswith("    ") and not line.startswith("     ") and ":" in line}
    return names


def _settings(cls: type) -> set[type]:
    out = {cls}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for value in (default if isinstance(default, list) else [default]):
            if dataclasses.is_dataclass(value):
                out |= _settings(type(value))
    return out


@pytest.mark.parametrize("cls", sorted({c for c in CONFIGS.values()}, key=lambda c: c.__name__))
def test_every_field_is_documented(cls):
    from worldboot.train.config import SourceSettings  # a list's items: no default instance to find it by

    for klass in _settings(cls) | {SourceSettings}:
        missing = {f.name for f in dataclasses.fields(klass)} - _documented(klass)
        assert not missing, f"{klass.__name__}: fields without a line in its Attributes: {sorted(missing)}"
