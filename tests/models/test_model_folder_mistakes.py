"""A model folder whose ``config.json`` or ``worldboot.json`` is wrong, or whose config does not
fit its weights: every command that reads it (``info``, ``plan``, ``serve --world``, ``tokenize``,
``generate``) says so in one line naming the file (and the key, or the tensor and both shapes),
exit 2, where transformers raised a ``TypeError``, ``ValueError``, ``OSError``,
``StrictDataclassFieldValidationError`` or ``RuntimeError``, or loaded random weights without a word.

The folder is a copy of the shipped smoke base (a 2-layer Chameleon, hidden size 128, 4 heads).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worldboot.cli import main
from worldboot.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]
CDM = ROOT / "configs" / "demo" / "cdm.yaml"


def _smoke() -> Path:
    import worldboot

    found = sorted((Path(worldboot.__file__).parent / "base" / "weights").glob("base-smoke-*"))
    assert found, "the shipped smoke base is missing"
    return found[0]


SMOKE = _smoke()


def _set(**values: Any) -> Callable[[dict], Any]:
    """An edit of the config that sets top-level keys."""
    return lambda config: {**config, **values}


def _vq(**values: Any) -> Callable[[dict], Any]:
    return lambda config: {**config, "vq_config": {**config["vq_config"], **values}}


def _drop(key: str) -> Callable[[dict], Any]:
    return lambda config: {k: v for k, v in config.items() if k != key}


#: config.json mistakes caught from the file alone (every command): id -> (new text or edit, message).
CONFIG_CASES: dict[str, tuple[str | Callable[[dict], Any], str]] = {
    "a-list": ("[1]", r"config\.json: holds a JSON list"),
    "empty": ("{}", r"config\.json: no model_type"),
    "not-json": ('{"model_type": ', r"config\.json:1: not valid JSON"),
    "hidden-size-text": (_set(hidden_size="128"), r"config\.json: hidden_size must be of type int, got '128'"),
    "nested-text": (_vq(resolution="x"), r"config\.json: vq_config\.resolution must be of type int, got 'x'"),
    "vq-config-list": (_set(vq_config=[1]), r"config\.json: vq_config must be of type dict, got \[1\]"),
    "heads-7": (_set(num_attention_heads=7), r"config\.json: hidden_size 128 is not divisible by num_attention_heads 7"),
    "kv-heads-3": (_set(num_key_value_heads=3), r"config\.json: num_attention_heads 4 is not divisible by "
                                                r"num_key_value_heads 3"),
    "zero-hidden": (_set(hidden_size=0), r"config\.json: hidden_size must be a positive integer, got 0"),
    "no-vocabulary-map": (_drop("vocabulary_map"), r"config\.json: no vocabulary_map"),
    "unknown-type": (_set(model_type="nosuch"), r"config\.json: model_type 'nosuch'"),
    "activation": (_set(hidden_act="nope"), r"config\.json: hidden_act 'nope' is not an activation"),
    "rope-type": (_set(rope_parameters={"rope_type": "nope", "rope_theta": 1.0}),
                  r"config\.json: rope_parameters\.rope_type 'nope'"),
}
#: config.json that does not fit the weights (commands that load them): id -> (edit, message).
WEIGHT_CASES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "more-layers": (_set(num_hidden_layers=3), r"config\.json asks for the tensor model\.layers\.2\.\S+ \(and \d+ "
                                               r"more\), which \S+model\.safetensors lacks"),
    "fewer-layers": (_set(num_hidden_layers=1), r"model\.safetensors holds the tensor model\.layers\.1\.\S+ \(and \d+ "
                                                r"more\), which \S+config\.json has no place for"),
    "hidden-64": (_set(hidden_size=64), r"model\.safetensors: tensor \S+ has shape \[\d+, 128\], where "
                                        r"\S+config\.json makes it \[\d+, 64\]"),
    "wider-mlp": (_set(intermediate_size=128), r"model\.safetensors: tensor model\.layers\.0\.mlp\.\S+ has shape "
                                               r"\[\d+, \d+\], where \S+config\.json makes it"),
}
#: worldboot.json mistakes (every command): id -> (new text or edit, message).
META_CASES: dict[str, tuple[str | Callable[[dict], Any], str]] = {
    "a-list": ("[1]", r"worldboot\.json: holds a JSON list"),
    "not-json": ("{", r"worldboot\.json:1: not valid JSON"),
    "image-size-text": (_set(image_size="x"), r"worldboot\.json: image_size must be a positive integer, got 'x'"),
    "templates-number": (_set(templates=5), r"worldboot\.json: templates must be an object"),
    "templates-key": (lambda m: {**m, "templates": {**m["templates"], "nope": "a"}},
                      r"worldboot\.json: templates\.nope is not a prompt template"),
    "templates-value": (lambda m: {**m, "templates": {**m["templates"], "world": 3}},
                        r"worldboot\.json: templates\.world must be a string"),
    "family-number": (_set(family=5), r"worldboot\.json: family must be a non-empty string, got 5"),
    "family-unknown": (_set(family="nope"), r"worldboot\.json: unknown model family 'nope'"),
}
#: The commands of the reviewer's report (plan reads the config and the weights' headers only).
COMMANDS = ("info", "plan", "serve")
#: Commands that read the weights (through load_backbone; plan their headers).
LOADING = ("info", "serve", "plan", "tokenize", "generate")


def _folder(tmp_path: Path, name: str, edit: str | Callable[[dict], Any]) -> Path:
    """A copy of the smoke base with ``name`` rewritten: ``edit`` is its new text or a change of its JSON."""
    model = tmp_path / "m"
    shutil.copytree(SMOKE, model)
    file = model / name
    text = edit if isinstance(edit, str) else json.dumps(edit(json.loads(file.read_text())))
    file.write_text(text)
    return model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _argv(command: str, model: Path, tmp_path: Path) -> list[str]:
    if command in ("tokenize", "generate"):
        from helpers import square_triplets

        square_triplets(tmp_path / "data", 2)
    manifest = str(tmp_path / "data" / "manifest.jsonl")
    return {
        "info": ["info", "--model", str(model)],
        "plan": ["plan", "--config", str(CDM), "--base", str(model), "--examples", "100", "--gpus", "1"],
        "serve": ["serve", "--world", str(model), "--port", str(_free_port())],
        "tokenize": ["tokenize", manifest, "--backbone", str(model), "--out", str(tmp_path / "cache")],
        "generate": ["generate", manifest, "--world", str(model), "--out", str(tmp_path / "pred")],
    }[command]


@pytest.fixture(autouse=True)
def _no_server(monkeypatch):
    """``serve`` must fail before it serves: a server that starts is a failure, not a hang."""
    import uvicorn

    def run(*args, **kwargs):
        raise AssertionError("serve started a server on a model folder it should have refused")

    monkeypatch.setattr(uvicorn, "run", run)


def _refused(command: str, model: Path, tmp_path: Path, capsys, message: str, file: str) -> None:
    """``command`` on ``model`` exits 2 with one line that names ``model/file`` and matches ``message``."""
    capsys.readouterr()
    assert main(_argv(command, model, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"worldboot {command}: error: "), err
    assert str(model / file) in lines[0], err
    assert re.search(message, lines[0]), err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_bad_config_json_is_one_line_naming_it(case, command, tmp_path, capsys):
    edit, message = CONFIG_CASES[case]
    model = _folder(tmp_path, "config.json", edit)
    _refused(command, model, tmp_path, capsys, message, "config.json")


#: Each weight case on info, serve and plan (which reads the headers only), two on the other
#: loading commands (the loader is the same).
WEIGHT_RUNS = [(case, command) for case in WEIGHT_CASES for command in LOADING
               if command in ("info", "serve", "plan") or case in ("more-layers", "hidden-64")]
#: Each worldboot.json case on each command but plan's of the family (plan reads config.json's architecture).
META_RUNS = [(case, command) for case in META_CASES for command in COMMANDS
             if (case, command) != ("family-unknown", "plan")]


@pytest.mark.parametrize(("case", "command"), WEIGHT_RUNS)
def test_a_config_json_that_does_not_fit_the_weights_names_the_tensor(case, command, tmp_path, capsys):
    """transformers raised a bare RuntimeError for a shape, and for a layer more or less loaded
    the model with that layer at random (or dropped) without a word."""
    edit, message = WEIGHT_CASES[case]
    model = _folder(tmp_path, "config.json", edit)
    _refused(command, model, tmp_path, capsys, message, "config.json")


@pytest.mark.parametrize(("case", "command"), META_RUNS)
def test_a_bad_worldboot_json_is_one_line_naming_it(case, command, tmp_path, capsys):
    edit, message = META_CASES[case]
    model = _folder(tmp_path, "worldboot.json", edit)
    _refused(command, model, tmp_path, capsys, message, "worldboot.json")


def test_a_vq_decoder_of_other_shapes_names_the_tensor(tmp_path):
    """``vq_decoder.safetensors`` of another VQ config: load_state_dict listed every tensor over many lines."""
    import torch
    from safetensors.torch import load_file, save_file

    from worldboot.models import load_backbone

    model = _folder(tmp_path, "worldboot.json", lambda m: m)
    state = load_file(str(model / "vq_decoder.safetensors"))
    first = sorted(state)[0]
    state[first] = torch.zeros(*(n + 1 for n in state[first].shape))
    save_file(state, str(model / "vq_decoder.safetensors"))
    with pytest.raises(ModelError, match=rf"vq_decoder\.safetensors: tensor {first} has shape .* where "
                                         r"\S+config\.json makes it") as err:
        load_backbone(model)
    assert "\n" not in str(err.value)


def test_a_good_folder_still_loads_and_plans(tmp_path, capsys):
    """The checks refuse nothing the shipped base holds (no tensor missing or left over)."""
    model = _folder(tmp_path, "worldboot.json", lambda m: m)
    assert main(["info", "--model", str(model)]) == 0
    assert main(_argv("plan", model, tmp_path)) == 0


def test_errors_that_are_not_the_folders_keep_their_traceback(tmp_path, monkeypatch):
    """Out of memory while loading is a RuntimeError too: it is not turned into a folder mistake."""
    import torch

    from worldboot.models import load_backbone
    from worldboot.models.chameleon import ChameleonWorldLM

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ChameleonWorldLM, "from_pretrained", oom)
    with pytest.raises(torch.OutOfMemoryError):
        load_backbone(_folder(tmp_path, "worldboot.json", lambda m: m))


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, Path]:
    """A tiny causal-vq (Gemma) and a tiny Emu3 (its language model nested in ``text_config``)."""
    from worldboot.models.causal_vq import save_tiny_causal_vq
    from worldboot.models.tiny import save_tiny_emu3

    root = tmp_path_factory.mktemp("families")
    return {"causal-vq": save_tiny_causal_vq(root / "causal-vq"), "emu3": save_tiny_emu3(root / "emu3")}


def _text(config: dict, **values: Any) -> dict:
    """``values`` set in the language model's keys (Emu3 nests them in ``text_config``)."""
    if "text_config" in config:
        return {**config, "text_config": {**config["text_config"], **values}}
    return {**config, **values}


@pytest.mark.parametrize("family", ["causal-vq", "emu3"])
@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: [1], r"config\.json: holds a JSON list"),
    (lambda c: _text(c, hidden_size="128"), r"config\.json: \S*hidden_size must be of type int, got '128'"),
    (lambda c: _text(c, num_hidden_layers=3), r"config\.json asks for the tensor \S*layers\.2\."),
    (lambda c: _text(c, hidden_size=64), r"model\.safetensors: tensor \S+ has shape"),
], ids=["a-list", "text", "more-layers", "hidden-64"])
def test_the_other_families_read_their_folders_the_same_way(families, family, edit, message, tmp_path):
    from worldboot.models import load_backbone

    model = tmp_path / "m"
    shutil.copytree(families[family], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(ModelError, match=message) as err:
        load_backbone(model)
    assert "\n" not in str(err.value)
    assert str(model / "config.json") in str(err.value) or str(model / "model.safetensors") in str(err.value)
