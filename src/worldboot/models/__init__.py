"""Backbones: the Protocol every backbone implements, its three families (Chameleon/Anole, any
causal LM plus a VQGAN, and Emu3), the VQ decoder, tiny builders.

:func:`load_backbone` is the one way stages open a model directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from worldboot.errors import ModelError, unless_loop


def load_backbone(path: str | os.PathLike[str], **kwargs: Any):
    """Open a model directory as a backbone.

    ``path`` may be a base model directory, a trained run directory (its ``merged/`` model
    if present, else its LoRA ``adapter/`` on top of the base model it records), or an
    adapter directory itself. The recorded base may itself be a run directory (a world model
    trained further, as ``worldboot train world-rl`` does): it is opened the same way, and an
    adapter of its own is merged into its weights before this one goes on top.

    Args:
        path: The directory.
        **kwargs: Passed to the family's loader (``vqgan_dir``, ``dtype``, ``device_map``).

    Returns:
        A :class:`~worldboot.models.backbone.Backbone` in eval mode.

    Raises:
        ModelError: When the directory is missing files, or an adapter does not fit its base.
    """
    from worldboot.models.files import read_json
    from worldboot.models.folder import read_meta

    _check_placement(kwargs)
    path = Path(path)
    if (path / "merged" / "config.json").is_file():
        path = path / "merged"
    elif (path / "adapter" / "adapter_config.json").is_file():
        path = path / "adapter"
    if not (path / "adapter_config.json").is_file():
        return _load_family(path, **kwargs)

    adapter = read_json(path / "adapter_config.json")
    if not isinstance(adapter, dict):
        raise ModelError(f"{path / 'adapter_config.json'}: holds a JSON {type(adapter).__name__}, where peft's "
                         "adapter config is an object of keys")
    base = read_meta(path).get("base_model") or adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ModelError(f"adapter {path} does not say which base model it belongs to")
    from peft import PeftModel

    backbone = load_backbone(base, **kwargs)
    if isinstance(backbone.model, PeftModel):
        backbone.model = backbone.model.merge_and_unload()

    try:
        backbone.model = PeftModel.from_pretrained(backbone.model, str(path))
    except (ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"adapter {path} does not fit the base model {base}: {first}") from None
    backbone.model.eval()
    return backbone


#: Weight types a backbone loads in (``--dtype``).
DTYPES = ("float32", "bfloat16", "float16")


def _check_placement(kwargs: dict[str, Any]) -> None:
    """Turn a ``dtype`` name into torch's dtype and refuse placements this machine cannot
    give, in one line each (torch raised an AttributeError or an AssertionError)."""
    import torch

    dtype = kwargs.get("dtype")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        kwargs["dtype"] = getattr(torch, dtype)
    place = kwargs.get("device_map")
    if isinstance(place, str) and place.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {place!r}: this machine has no CUDA GPU that torch can use")


#: The backbone families: name -> (loader, what it is). ``worldboot info`` lists them.
FAMILIES = {
    "chameleon": ("worldboot.models.chameleon.load_chameleon",
                  "Chameleon / Anole-7B (transformers format + Anole's vqgan.ckpt), and tiny builds of it"),
    "causal-vq": ("worldboot.models.causal_vq.load_causal_vq",
                  "any transformers causal LM plus a VQGAN, codes at an offset (Liquid-7B: Gemma + Anole's VQGAN)"),
    "emu3": ("worldboot.models.emu3.load_emu3",
             "Emu3-Gen / Emu3-Chat in transformers' format (Emu3ForConditionalGeneration + Emu3VQVAE)"),
}


def check_model_dir(path: str | os.PathLike[str]) -> None:
    """Refuse a model path that is a file or not there, before a stage writes anything.

    Raises:
        ModelError: Naming the path.
    """
    path = Path(path)
    if path.is_file():
        raise ModelError(f"{path} is a file: give the model's folder")
    if not path.is_dir():
        raise unless_loop(path, ModelError(f"model directory not found: {path}"))


def _load_family(path: Path, **kwargs: Any):
    """A base model directory through its family's loader (``worldboot.json`` says which; a
    transformers Emu3 folder without one is Emu3 by its ``config.json``)."""
    from worldboot.models.causal_vq import FAMILY, family_of, load_causal_vq
    from worldboot.models.chameleon import load_chameleon
    from worldboot.models.emu3 import FAMILY as EMU3
    from worldboot.models.emu3 import is_emu3_dir, load_emu3

    check_model_dir(path)
    family = family_of(path)
    if family == EMU3 or (family == "chameleon" and is_emu3_dir(path)):
        kwargs.pop("vqgan_dir", None)
        return load_emu3(path, **kwargs)
    if family == FAMILY:
        kwargs.pop("vqgan_dir", None)
        return load_causal_vq(path, **kwargs)
    if family != "chameleon":
        raise ModelError(f"{path / 'worldboot.json'}: unknown model family {family!r} (worldboot knows "
                         f"{', '.join(FAMILIES)})")
    return load_chameleon(path, **kwargs)
