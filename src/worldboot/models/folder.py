"""A model folder's ``config.json`` and ``worldboot.json``, read and checked in one place, and its
weights loaded against that config.

Every loader (:func:`~worldboot.models.load_backbone` and the families' ``load_*``) and
``worldboot plan`` read a folder through here, so that a mistake in either file is one
:class:`~worldboot.errors.ModelError` naming the file and the key, whatever command met it,
where transformers raised a ``TypeError`` (a list for the config), a ``ValueError``
("Unrecognized model"), an ``OSError`` (not JSON), huggingface_hub's
``StrictDataclassFieldValidationError`` (``"hidden_size": "128"``) or, at the model's
construction, an ``AttributeError``, ``KeyError`` or ``ZeroDivisionError``; and a config that
does not fit the weights (``num_hidden_layers`` 3 for weights of 2) is refused naming the
weights file, the first tensor and both shapes, where transformers raised a bare
``RuntimeError`` or, for a missing layer, initialised it at random without a word.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from worldboot.errors import ModelError, unless_loop
from worldboot.models.files import field_value, read_json

CONFIG_FILE = "config.json"
META_FILE = "worldboot.json"
WEIGHTS_INDEX = "model.safetensors.index.json"

T = TypeVar("T")

#: A numbered block of a model's stack in a tensor's name: ``model.layers.3.``, a BERT's
#: ``encoder.layer.3.``, a GPT-2's ``h.3.``, a ViT's ``blocks.3.``.
LAYER = re.compile(r"(^|\.)(layers?|h|blocks?)\.\d+\.")

#: Keys of ``config.json`` a model type needs that transformers lets be absent (its model then
#: fails with an ``AttributeError``), and why.
NEEDED = {
    "chameleon": ("vocabulary_map", "a Chameleon config maps image codes to tokens with it"),
    "emu3": ("vocabulary_map", "an Emu3 config maps codes to tokens with it"),
}
#: Sizes of the language model that must be positive integers when the config has them.
SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
         "vocab_size", "max_position_embeddings", "head_dim")


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_config(file: Path, build: Callable[[], T], data: Mapping[str, Any] | None = None) -> T:
    """``build()``, which makes a transformers config of ``file``, with transformers' refusals
    of its values as one line naming ``file`` (and the key).

    Args:
        file: The config's file, for the error.
        build: Makes the config.
        data: The file's keys, to name a nested key with its parent's (``vq_config.resolution``).

    Raises:
        ModelError: For a value of the wrong type (huggingface_hub's strict dataclasses) or
            values that do not fit together (``TypeError``, ``ValueError``, ``KeyError``).
    """
    from huggingface_hub.errors import StrictDataclassError

    try:
        return build()
    except StrictDataclassError as err:  # "Validation error for field 'hidden_size': TypeError: ..."
        raise ModelError(f"{file}: {_field_error(err, data or {})}") from None
    except (TypeError, ValueError, KeyError) as err:
        raise ModelError(f"{file}: {_one_line(err)}") from None


def _field_error(err: Exception, data: Mapping[str, Any]) -> str:
    """huggingface_hub's validation error of a field in a few words: the key (dotted when it is
    inside another of ``data``), the type transformers wants, and the value."""
    text = " ".join(str(err).split())
    field = re.search(r"field '([^']+)'", text)
    wrong = re.search(r"expected (\w+), got \w+ \(value: (.*?)\)(?:;|$| Errors)", text)
    if not field or not wrong:
        return _one_line(err)
    name = field.group(1)
    if name not in data:
        name = next((f"{key}.{name}" for key, value in data.items() if isinstance(value, dict) and name in value), name)
    return f"{name} must be of type {wrong.group(1)}, got {wrong.group(2)[:200]}"


def read_config(path: str | os.PathLike[str], config_class: Any = None) -> Any:
    """The transformers config of the model folder ``path``, from its ``config.json``, checked.

    Args:
        path: The model folder.
        config_class: The config class the caller's model needs (``ChameleonConfig``): its
            ``model_type`` must be the file's. None (or ``AutoConfig``): transformers'
            ``AutoConfig``, by the file's ``model_type``.

    Raises:
        ModelError: Naming ``config.json`` (and the key): missing, not JSON, not a JSON object,
            no or an unknown or another ``model_type``, a value transformers refuses, a size
            that is not a positive integer or that does not divide, a needed key absent.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise unless_loop(file, ModelError(f"{path} has no {CONFIG_FILE}: not a transformers model folder"))
    data = read_json(file)
    if not isinstance(data, dict):
        raise ModelError(f"{file}: holds a JSON {type(data).__name__}, where a model's config is an object of keys")
    kind = data.get("model_type")
    if not isinstance(kind, str) or not kind:
        raise ModelError(f"{file}: no model_type (the architecture transformers builds, e.g. \"chameleon\")")
    expected = getattr(config_class, "model_type", None)
    if expected and kind != expected:
        raise ModelError(f"{file}: model_type {kind!r}, where a {expected} model is needed")
    if kind not in CONFIG_MAPPING:
        import transformers

        raise ModelError(f"{file}: model_type {kind!r} is not an architecture transformers "
                         f"{transformers.__version__} knows")
    cls = config_class or AutoConfig
    config = build_config(file, lambda: cls.from_pretrained(path, local_files_only=True), data)
    check_config(config, file)
    return config


def check_config(config: Any, file: Path) -> None:
    """Refuse values of ``file``'s ``config`` that transformers takes but its model cannot be
    built with (a ``ZeroDivisionError``, ``KeyError`` or ``AttributeError`` at construction).

    Raises:
        ModelError: Naming the file and the key.
    """
    from transformers.activations import ACT2FN
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    needed = NEEDED.get(config.model_type)
    if needed and not (isinstance(getattr(config, needed[0], None), dict) and getattr(config, needed[0])):
        raise ModelError(f"{file}: no {needed[0]} ({needed[1]})")
    text = config.get_text_config()
    prefix = "" if text is config else "text_config."
    # A list (per-layer sizes of some architectures) is transformers' to check.
    values = {key: getattr(text, key) for key in SIZES
              if getattr(text, key, None) is not None and not isinstance(getattr(text, key), (list, tuple, dict))}
    for key in values:
        field_value(values, key, "count", str(file), prefix + key)
    heads, kv = values.get("num_attention_heads"), values.get("num_key_value_heads")
    if "head_dim" not in values and heads and values.get("hidden_size", 0) % heads:
        raise ModelError(f"{file}: {prefix}hidden_size {values['hidden_size']} is not divisible by "
                         f"{prefix}num_attention_heads {heads}")
    if heads and kv and heads % kv:
        raise ModelError(f"{file}: {prefix}num_attention_heads {heads} is not divisible by "
                         f"{prefix}num_key_value_heads {kv}")
    for key in ("hidden_act", "hidden_activation"):
        act = getattr(text, key, None)
        if isinstance(act, str) and act not in ACT2FN:
            raise ModelError(f"{file}: {prefix}{key} {act!r} is not an activation transformers knows")
    rope = getattr(text, "rope_parameters", None)
    rope_type = rope.get("rope_type", "default") if isinstance(rope, Mapping) else "default"
    if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
        raise ModelError(f"{file}: {prefix}rope_parameters.rope_type {rope_type!r} is not one of default, "
                         f"{', '.join(ROPE_INIT_FUNCTIONS)}")
    vq = getattr(config, "vq_config", None)
    mult = getattr(vq, "channel_multiplier", None)
    if vq is not None and mult is not None:
        field_value({"channel_multiplier": list(mult)}, "channel_multiplier", "counts", str(file),
                    "vq_config.channel_multiplier")


#: What each key of ``worldboot.json`` must be (a kind of :data:`~worldboot.models.files.KINDS`).
META_KINDS = {"image_size": "count", "image_token_offset": "count0"}
#: Keys of ``worldboot.json`` that hold text.
META_TEXT = ("family", "boi_token", "eoi_token", "base_model", "task")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model folder's ``worldboot.json`` (``{}`` without one), its keys checked.

    Raises:
        ModelError: Naming the file and the key: not JSON, not an object, or a key of the wrong
            kind (``image_size`` not a positive integer, ``templates`` not an object of texts...).
    """
    file = Path(path) / META_FILE
    if not file.is_file():
        return {}
    meta = read_json(file)
    if not isinstance(meta, dict):
        raise ModelError(f"{file}: holds a JSON {type(meta).__name__}, where worldboot's model metadata is an object")
    where = str(file)
    for key, kind in META_KINDS.items():
        field_value(meta, key, kind, where, default=None)
    for key in META_TEXT:
        value = meta.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ModelError(f"{file}: {key} must be a non-empty string, got {repr(value)[:200]}")
    if meta.get("image_shape") is not None:
        shape = field_value(meta, "image_shape", "counts", where)
        if len(shape) != 2:
            raise ModelError(f"{file}: image_shape must be [height, width], got {shape!r}")
    for key in ("mean", "std"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3
                                      and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ModelError(f"{file}: {key} must be three numbers (one per colour channel), got {repr(value)[:200]}")
    _check_templates(meta.get("templates"), file)
    return meta


def _check_templates(templates: Any, file: Path) -> None:
    """Refuse ``worldboot.json``'s ``templates`` unless it fits
    :class:`~worldboot.models.backbone.PromptTemplates` (texts; ``extra``: texts by name)."""
    import dataclasses

    from worldboot.models.backbone import PromptTemplates

    if templates is None:
        return
    if not isinstance(templates, dict):
        raise ModelError(f"{file}: templates must be an object of prompt texts, got {repr(templates)[:200]}")
    names = [f.name for f in dataclasses.fields(PromptTemplates)]
    for key, value in templates.items():
        if key not in names:
            raise ModelError(f"{file}: templates.{key} is not a prompt template (worldboot knows {', '.join(names)})")
        texts = value.values() if key == "extra" and isinstance(value, dict) else [value]
        if not all(isinstance(t, str) for t in texts):
            what = "an object of texts" if key == "extra" else "a string"
            raise ModelError(f"{file}: templates.{key} must be {what}, got {repr(value)[:200]}")


def weights_file(path: Path, key: str | None = None) -> Path:
    """The file of ``path`` that holds the tensor ``key`` (by the shards' index), else its
    ``model.safetensors``, else its index, else the folder itself: what an error names."""
    index = path / WEIGHTS_INDEX
    if index.is_file():
        try:
            shard = read_json(index).get("weight_map", {}).get(key)
        except (ModelError, AttributeError):
            shard = None
        return path / shard if isinstance(shard, str) else index
    single = path / "model.safetensors"
    return single if single.is_file() else path


def load_weights(model_class: Any, path: Path, config: Any, what: str = "model", **kwargs: Any) -> Any:
    """``model_class.from_pretrained(path, config=config, **kwargs)``, refusing weights that do
    not fit ``config`` in one line.

    Args:
        model_class: The transformers model class.
        path: The model folder.
        config: Its config (:func:`read_config`).
        what: What the model is, for the error (``"Emu3 model"``).
        **kwargs: Passed to ``from_pretrained`` (``dtype``, ``device_map``).

    Raises:
        ModelError: A weights file that is not readable, or tensors the config has no place
            for, lacks, or shapes otherwise (naming the file, the first tensor and both shapes).
    """
    from safetensors import SafetensorError

    try:
        model, info = model_class.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                  output_loading_info=True, **kwargs)
    except SafetensorError as err:
        raise ModelError(f"cannot load {what} from {path}: {weights_file(path)} is not a readable safetensors "
                         f"file ({_one_line(err)})") from None
    except (OSError, ValueError, KeyError) as err:
        # transformers names neither the file nor the cause for a damaged weights file.
        raise ModelError(f"cannot load {what} from {path}: {_one_line(err)}") from None
    except RuntimeError as err:
        if not str(err).startswith("Error(s) in loading state_dict"):
            raise  # out of memory, a CUDA error: not the folder's fault
        raise ModelError(f"cannot load {what} from {path}: {weights_file(path)}: {_one_line(err)}") from None
    check_loading(path, info)
    return model


def check_loading(path: Path, info: Mapping[str, Any]) -> None:
    """Refuse a load whose weights do not fit ``path``'s ``config.json`` (transformers'
    ``output_loading_info``): mismatched shapes, tensors missing (they would be left at random)
    or layers left over (a config of fewer layers than the weights).

    Raises:
        ModelError: Naming the weights file and the first tensor (with both shapes), and ``config.json``.
    """
    config = path / CONFIG_FILE
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: _natural(m[0]))
    if mismatched:
        key, in_file, in_model = mismatched[0]
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise ModelError(f"{weights_file(path, key)}: tensor {key} has shape {list(in_file)}, where {config} makes it "
                         f"{list(in_model)}{more}: the config does not belong to these weights")
    missing = sorted(info.get("missing_keys") or (), key=_natural)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{config} asks for the tensor {missing[0]}{more}, which {weights_file(path, missing[0])} "
                         "lacks: the config does not belong to these weights (num_hidden_layers?)")
    unexpected = sorted(info.get("unexpected_keys") or (), key=_natural)
    # A layer the config has no place for is a config of fewer layers than the weights; other
    # left-over tensors (a buffer an older transformers saved, another task's head) are common
    # in published checkpoints and harmless: transformers' own warning says which.
    layers = [k for k in unexpected if LAYER.search(k)]
    if layers:
        more = f" (and {len(layers) - 1} more)" if len(layers) > 1 else ""
        raise ModelError(f"{weights_file(path, layers[0])} holds the tensor {layers[0]}{more}, which {config} "
                         "has no place for: the config does not belong to these weights (num_hidden_layers?)")


def _natural(key: str) -> list[Any]:
    """``key`` sorted with its numbers as numbers (``layers.2`` before ``layers.10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def load_state(module: Any, state: Mapping[str, Any], file: Path, config: Path) -> None:
    """``module.load_state_dict(state, strict=True)`` for the weights of ``file``, refusing
    first, in one line, tensors that ``config`` (which built ``module``) shapes otherwise,
    lacks or needs (``load_state_dict`` lists every one, over many lines).

    Raises:
        ModelError: Naming ``file``, the first tensor and both shapes, and ``config``.
    """
    own = module.state_dict()
    for key in sorted(state, key=_natural):
        if key in own and tuple(own[key].shape) != tuple(state[key].shape):
            raise ModelError(f"{file}: tensor {key} has shape {list(state[key].shape)}, where {config} makes it "
                             f"{list(own[key].shape)}: the config does not belong to these weights")
    missing = sorted((k for k in own if k not in state), key=_natural)
    if missing:
        raise ModelError(f"{file} lacks the tensor {missing[0]} that {config} asks for: the config does not belong "
                         "to these weights")
    unexpected = sorted((k for k in state if k not in own), key=_natural)
    if unexpected:
        raise ModelError(f"{file} holds the tensor {unexpected[0]}, which {config} has no place for: the config does "
                         "not belong to these weights")
    module.load_state_dict(state, strict=True)


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in ``path``'s safetensors weights, read from the files' headers (no
    tensor is loaded); empty for a folder without safetensors weights.

    Raises:
        ModelError: A weights file or shard index that is not readable, naming it.
    """
    from safetensors import SafetensorError, safe_open

    index = path / WEIGHTS_INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelError(f"{index}: no weight_map object (the shards' index)")
        files = sorted({path / v for v in weight_map.values() if isinstance(v, str)})
    else:
        files = [path / "model.safetensors"] if (path / "model.safetensors").is_file() else []
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as err:
            raise ModelError(f"{file} is not a readable safetensors file ({_one_line(err)})") from None
    return shapes


def check_shapes(path: Path, model: Any) -> None:
    """Refuse weights that do not fit ``model`` (``path``'s config built on the meta device) from
    the files' headers alone, as :func:`check_loading` refuses them after a load: ``worldboot
    plan`` loads no weights.

    Tensors are compared where both name them: a checkpoint another transformers saved may
    name some otherwise. A layer is missing (or left over) when the first layer's tensor of
    that name is found where its own is not.

    Raises:
        ModelError: As :func:`check_loading`.
    """
    stored = stored_shapes(path)
    if not stored:
        return

    def first_layer(key: str) -> str:
        return LAYER.sub(lambda m: f"{m.group(1)}{m.group(2)}.0.", key, count=1)

    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_loading(path, {
        "mismatched_keys": [(k, stored[k], own[k]) for k in own if k in stored and stored[k] != own[k]],
        "missing_keys": [k for k in own if k not in stored and first_layer(k) in stored],
        "unexpected_keys": [k for k in stored if k not in own and first_layer(k) in own],
    })
