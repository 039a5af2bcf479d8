"""`worldboot convert` on damaged inputs: Anole's release folder with a checkpoint, vqgan.yaml or
params.json that holds the wrong types, a causal-vq VQGAN that does not load, and folders that
do not exist. Each is one line naming the file (and key), exit code 2, before anything is
written, and the input is left as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from anole_release import write_release
from worldboot.cli import main

VQ_CKPT, VQ_YAML = "tokenizer/vqgan.ckpt", "tokenizer/vqgan.yaml"
PARAMS, EXTRA, WEIGHTS = "models/7b/params.json", "models/7b/consolidate_params.json", "models/7b/consolidated.pth"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("worldboot convert: error: ") and "Traceback" not in err[0], err
    return err[0]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _edit_yaml(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = yaml.safe_load((folder / "vqgan.yaml").read_text())
        change(data)
        (folder / "vqgan.yaml").write_text(yaml.safe_dump(data))
    return edit


def _edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / name).write_text(json.dumps(change(json.loads((root / name).read_text()))))
    return edit


def _params(**values) -> Callable[[Path], None]:
    return _edit_json(PARAMS, lambda d: {"model": {k: v for k, v in {**d["model"], **values}.items() if v != "DROP"}})


def _no_tensor(folder: Path) -> None:
    sd = _state_dict(folder / "vqgan.ckpt")
    sd["encoder.conv_in.weight"] = 3
    torch.save({"state_dict": sd}, folder / "vqgan.ckpt")


def _lacks_a_tensor(folder: Path) -> None:
    sd = _state_dict(folder / "vqgan.ckpt")
    del sd["decoder.conv_in.weight"]
    torch.save({"state_dict": sd}, folder / "vqgan.ckpt")


#: Damage done to a taming VQGAN folder (Anole's tokenizer/ or causal-vq's --vqgan) -> what the line says.
VQGAN_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "ckpt holds a list": (lambda f: torch.save([1, 2], f / "vqgan.ckpt"), "vqgan.ckpt: it holds list, not tensors"),
    "state_dict is a list": (lambda f: torch.save({"state_dict": [1]}, f / "vqgan.ckpt"),
                             "vqgan.ckpt: its state_dict holds list"),
    "state_dict holds a number": (_no_tensor, "vqgan.ckpt: its state_dict holds 'encoder.conv_in.weight' as int"),
    "ckpt lacks a tensor": (_lacks_a_tensor, "vqgan.ckpt does not fit vqgan.yaml: it lacks decoder.conv_in.weight"),
    "text for a number": (_edit_yaml(lambda d: d["model"]["params"]["ddconfig"].update(ch="x")),
                          "vqgan.yaml: model.params.ddconfig.ch must be a positive integer, got 'x'"),
    "text for a list": (_edit_yaml(lambda d: d["model"]["params"]["ddconfig"].update(ch_mult="x")),
                        "ddconfig.ch_mult must be a non-empty list of positive integers, got 'x'"),
    "a list for a number": (_edit_yaml(lambda d: d["model"]["params"].update(n_embed=[512])),
                            "vqgan.yaml: model.params.n_embed must be a positive integer, got [512]"),
    "a list for a mapping": (_edit_yaml(lambda d: d["model"]["params"].update(ddconfig=[1])),
                             "vqgan.yaml: not a taming VQGAN config (no model.params.ddconfig mapping)"),
    "params a list": (_edit_yaml(lambda d: d["model"].update(params=[1])), "vqgan.yaml: not a taming VQGAN config"),
    "no codes": (_edit_yaml(lambda d: d["model"]["params"].update(n_embed=0)), "n_embed must be a positive integer, got 0"),
    "a width GroupNorm refuses": (_edit_yaml(lambda d: d["model"]["params"]["ddconfig"].update(ch=48)),
                                  "ddconfig.ch must be a multiple of 32"),
}

#: Damage done to Anole's release folder -> (the file named, what the line says).
RELEASE_DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    **{f"vqgan: {name}": (lambda root, damage=damage: damage(root / "tokenizer"), VQ_CKPT if "ckpt" in says else VQ_YAML,
                          says) for name, (damage, says) in VQGAN_DAMAGE.items()},
    "params.json holds a list": (_edit_json(PARAMS, lambda d: [1]), PARAMS, "it holds list"),
    "params.json's model is a list": (_edit_json(PARAMS, lambda d: {"model": [1]}), PARAMS, "its model entry holds list"),
    "consolidate_params.json holds text": (_edit_json(EXTRA, lambda d: "x"), EXTRA, "it holds str"),
    "params.json lacks dim": (_params(dim="DROP"), PARAMS, "no dim"),
    "n_heads is text": (_params(n_heads="4"), PARAMS, "n_heads must be a positive integer, got '4'"),
    "n_heads is 0": (_params(n_heads=0), PARAMS, "n_heads must be a positive integer, got 0"),
    "n_layers is a fraction": (_params(n_layers=1.5), PARAMS, "n_layers must be a positive integer, got 1.5"),
    "norm_eps is a list": (_params(norm_eps=[1e-5]), PARAMS, "norm_eps must be a positive number"),
    "rope_theta is text": (_params(rope_theta="x"), PARAMS, "rope_theta must be a positive number, got 'x'"),
    "swin_norm is text": (_params(swin_norm="no"), PARAMS, "swin_norm must be true or false"),
    "consolidated.pth holds a list": (lambda root: torch.save([1], root / WEIGHTS), WEIGHTS, "it holds list"),
    "text_tokenizer.json's vocab is a list": (
        _edit_json("tokenizer/text_tokenizer.json", lambda d: {**d, "model": {**d["model"], "vocab": [1]}}),
        "tokenizer/text_tokenizer.json", "not a tokenizers JSON file"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """Anole's release folder of a tiny model (tests/anole_release.py)."""
    return write_release(tmp_path_factory.mktemp("anole-release"))[1]


@pytest.mark.parametrize("case", list(RELEASE_DAMAGE))
def test_a_damaged_anole_release_is_one_line_naming_the_file(case, release, tmp_path, capsys):
    damage, name, says = RELEASE_DAMAGE[case]
    root = tmp_path / "release"
    shutil.copytree(release, root)
    damage(root)
    before = _files(root)
    assert main(["convert", "anole", str(root), "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys)
    assert f"{root / name}" in line and says in line, line
    assert not (tmp_path / "out").exists() and _files(root) == before


def test_an_anole_release_folder_that_is_not_there(tmp_path, capsys):
    assert main(["convert", "anole", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert f"Anole's release folder not found: {tmp_path / 'nope'}" in _one_line(capsys)
    (tmp_path / "file").write_text("x")
    assert main(["convert", "anole", str(tmp_path / "file"), "--out", str(tmp_path / "out")]) == 2
    assert "is a file" in _one_line(capsys) and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def llm_and_vqgan(tmp_path_factory) -> tuple[Path, Path, int]:
    """A tiny causal LM folder and a taming VQGAN folder that fit (and the codes' offset)."""
    from models.test_vq import TAMING_PARAMS
    from worldboot.models.causal_vq import tiny_causal_vq

    root = tmp_path_factory.mktemp("causal-vq")
    bb = tiny_causal_vq(seed=3)
    bb.core.save_pretrained(root / "llm")
    bb.tokenizer.save_pretrained(root / "llm")
    (root / "vqgan").mkdir()
    sd = dict(bb.vqgan.vq.state_dict())
    sd.update({f"decoder.{k}": v for k, v in bb.vqgan.decoder.state_dict().items()})
    torch.save({"state_dict": sd}, root / "vqgan" / "vqgan.ckpt")
    (root / "vqgan" / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    return root / "llm", root / "vqgan", bb.image_token_offset


def _causal_vq(llm, vqgan, offset, out) -> list[str]:
    return ["convert", "causal-vq", str(llm), "--vqgan", str(vqgan), "--boi", "<boi>", "--eoi", "<eoi>",
            "--image-token-offset", str(offset), "--out", str(out)]


@pytest.mark.parametrize("case", list(VQGAN_DAMAGE))
def test_a_causal_vq_vqgan_that_does_not_load_is_refused_at_conversion(case, llm_and_vqgan, tmp_path, capsys):
    """It was linked in without a look, and every later command (info, tokenize) failed on it,
    some with a traceback."""
    llm, good, offset = llm_and_vqgan
    damage, says = VQGAN_DAMAGE[case]
    vqgan = tmp_path / "vqgan"
    shutil.copytree(good, vqgan)
    damage(vqgan)
    before = _files(vqgan)
    assert main(_causal_vq(llm, vqgan, offset, tmp_path / "out")) == 2
    line = _one_line(capsys)
    assert str(vqgan) in line and says in line, line
    assert not (tmp_path / "out").exists() and _files(vqgan) == before


def test_causal_vq_folders_that_are_not_there_never_reach_the_hub(llm_and_vqgan, tmp_path, monkeypatch, capsys):
    """A missing LLM_DIR went to from_pretrained, which took it for a hub name (half a minute
    offline); now it is refused at once, as a missing --vqgan folder is."""
    import worldboot.models.causal_vq as causal_vq

    class NoHub:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise AssertionError(f"from_pretrained{args} was called")

    llm, vqgan, offset = llm_and_vqgan
    monkeypatch.setattr(causal_vq, "AutoConfig", NoHub)
    monkeypatch.setattr(causal_vq, "AutoTokenizer", NoHub)
    monkeypatch.chdir(tmp_path)
    for name in ("org/no-such-model", str(tmp_path / "gone")):  # a hub-like name, and an absolute path
        assert main(_causal_vq(name, vqgan, offset, tmp_path / "out")) == 2
        assert f"language model folder not found: {name}" in _one_line(capsys)
    assert main(_causal_vq(llm, tmp_path / "no-vqgan", offset, tmp_path / "out")) == 2
    assert f"VQGAN folder not found: {tmp_path / 'no-vqgan'}" in _one_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(_causal_vq(tmp_path / "empty", vqgan, offset, tmp_path / "out")) == 2
    assert "has no config.json" in _one_line(capsys)
    assert not (tmp_path / "out").exists()
