"""Reading a model directory's small files with one-line errors that name the file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from worldboot.errors import ModelError


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file of a model directory (``worldboot.json``, ``adapter_config.json``...).

    Raises:
        ModelError: When it cannot be read or is not JSON, naming the file and line.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text; the model folder is damaged (copy it again)") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); the model folder is damaged") from None
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror or err}") from None


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensors of a safetensors file.

    Raises:
        ModelError: When it is not a readable safetensors file (truncated, or something else).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: What a value of each kind must be (said in the error) and the test it must pass.
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "count": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "count0": ("an integer of at least 0", lambda v: _is_int(v) and v >= 0),
    "counts": ("a non-empty list of positive integers",
               lambda v: isinstance(v, list) and bool(v) and all(_is_int(x) and x >= 1 for x in v)),
    "counts0": ("a list of positive integers", lambda v: isinstance(v, list) and all(_is_int(x) and x >= 1 for x in v)),
    "positive": ("a positive number", lambda v: _is_number(v) and v > 0),
    "share": ("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1),
    "flag": ("true or false", lambda v: isinstance(v, bool)),
}


def field_value(table: Mapping[str, Any], key: str, kind: str, where: str, name: str = "",
                default: Any = ...) -> Any:
    """``table[key]`` of a model's config file, checked to be of ``kind`` (see :data:`KINDS`).

    Args:
        table: The mapping that holds the key.
        key: The key.
        kind: A name of :data:`KINDS`.
        where: The file, for the error.
        name: The key's dotted name in the file (default ``key``).
        default: Returned when the key is absent or null; ``...`` (the default): the key is required.

    Raises:
        ModelError: Naming the file and the key, and what its value must be.
    """
    name = name or key
    value = table.get(key)
    if value is None and default is not ...:
        return default
    if key not in table:
        raise ModelError(f"{where}: no {name}")
    what, test = KINDS[kind]
    if not test(value):
        raise ModelError(f"{where}: {name} must be {what}, got {repr(value)[:200]}")
    return value


def tensor_mapping(obj: Any, path: str | os.PathLike[str], part: str = "it") -> dict[str, Any]:
    """``obj``, read from the checkpoint ``path``, when it maps tensor names to tensors.

    Args:
        obj: What the checkpoint holds (or its ``state_dict`` entry).
        path: The checkpoint, for the error.
        part: What ``obj`` is of the file, for the error (``its state_dict``).

    Raises:
        ModelError: Naming the file, and what it holds instead, or its first entry that is not a tensor.
    """
    import torch

    if not isinstance(obj, dict):
        raise ModelError(f"{path}: {part} holds {type(obj).__name__}, not tensors by name: not a checkpoint of weights")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ModelError(f"{path}: {part} has the key {repr(key)[:80]} ({type(key).__name__}), where a checkpoint "
                             "of weights names its tensors")
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: {part} holds {key[:80]!r} as {type(value).__name__}, not a tensor: not a "
                             "checkpoint of weights")
    return obj


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The text tokenizer of a model directory (transformers' ``AutoTokenizer``).

    Raises:
        ModelError: Naming ``tokenizer.json`` when it is missing or unreadable (transformers'
            own message names neither the file nor, when it is missing, the cause).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        if not (path / "tokenizer.json").is_file():
            raise ModelError(f"{path} has no tokenizer.json (its text tokenizer)") from None
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path / 'tokenizer.json'} cannot be read as a tokenizer ({detail})") from None


def check_new_model_dir(out: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """Refuse an output model folder that would damage an input or mix with another model:
    the input itself or a folder inside it (copying the input into it recurses), or a folder
    that already holds files.

    Raises:
        ModelError: Saying which, before anything is written.
    """
    out_real = Path(os.path.realpath(out))
    for src in inputs:
        src_real = Path(os.path.realpath(src))
        if out_real == src_real or src_real in out_real.parents:
            raise ModelError(f"--out {out} lies inside the input {src}: write the model to a new folder elsewhere")
    if out_real.exists() and (not out_real.is_dir() or any(out_real.iterdir())):
        raise ModelError(f"--out {out} already exists and is not an empty folder: choose a new folder")


def link_model_files(src: str | os.PathLike[str], out: str | os.PathLike[str], skip: str = "worldboot.json") -> None:
    """Link (not copy) every file of the model folder ``src`` into the new folder ``out``, but
    ``skip`` (worldboot's own metadata, which the caller writes afresh)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        if f.is_file() and f.name != skip:
            (out / f.name).symlink_to(f.resolve())
