"""Configs as dataclasses: YAML presets, dotted command-line overrides, dumps.

A config is a (nested) dataclass. Every command resolves its config the same way, each source
overriding the ones before it (:func:`load_config`):

1. the dataclass defaults;
2. a named preset (``--preset``, where a command has presets);
3. a YAML file (``--config FILE``);
4. ``key.sub=value`` overrides, given as positional arguments (``optim.lr=1e-4``);
5. the command's own flags (``--out DIR``, ``--world DIR``...), which are shorthands for keys.

Every key is checked against the dataclass: an unknown key names itself and the closest known
key, and a value of the wrong type names the key and the type it wants.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from worldboot.bounds import check_ranges
from worldboot.errors import ConfigError, unless_loop

T = TypeVar("T")



def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Override(str):
    """A ``key=value`` override's text, with the YAML value it reads as: a text field takes the
    text (``out=2024`` is the folder ``2024``), any other field the value."""

    parsed: Any

    @classmethod
    def of(cls, text: str) -> _Override:
        out = cls(text)
        out.parsed = _parse_scalar(text)
        return out


def _takes_text(tp: Any, override: _Override) -> bool:
    if not isinstance(override.parsed, (int, float, bool)):  # lists, mappings, null and text read as they are
        return False
    if get_origin(tp) is Literal:  # mixed_precision=no is the choice "no", not YAML's false
        return str(override) in get_args(tp)
    return tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless."""
    if isinstance(value, _Override):
        value = str(value) if _takes_text(tp, value) else value.parsed
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}': {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list or tp is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _unknown_key(cls: type, key: Any, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    key = str(key)  # YAML keys may be numbers or null
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, checking every key and value.

    Args:
        cls: A dataclass type.
        data: Keys and values; nested dataclasses take nested mappings.
        prefix: Dotted path of ``cls`` within the root config, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: On an unknown key, a value of the wrong type, or one out of its range.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(cls, key, prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    cfg = cls(**kwargs)
    if not prefix:  # the root checks the whole tree once
        check_ranges(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config (a dataclass, or a mapping of a command's settings) as plain data (mappings,
    lists, scalars), ready for YAML or JSON."""
    data = dict(cfg) if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return json.loads(json.dumps(data, default=str))


def _parse_scalar(text: str) -> Any:
    # YAML's scalar rules: 1e-4 -> float, true -> bool, [1, 2] -> list, null -> None.
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # yaml reads "1e-4" as a string (YAML 1.1); numbers written that way are common in ML.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_utf8(path: str | os.PathLike[str]) -> str:
    """A config file's text.

    Raises:
        ConfigError: When it is not UTF-8, naming the line of the first bad byte.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {err.start + 1} of the file)") from None


def yaml_error(path: str | os.PathLike[str], err: Exception) -> str:
    """One line for a YAML parse error: ``FILE:LINE: not valid YAML (what)``."""
    mark = getattr(err, "problem_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    return f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or str(err).splitlines()[0]})"


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (``safe_load`` keeps the
    last silently, so ``optim: {lr: 0.1}`` followed by another ``optim:`` lost the lr)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys (<<) may override on purpose
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error naming the file on failure."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder: give a YAML file")
    if not path.is_file():
        raise unless_loop(path, ConfigError(f"config file not found: {path}"))
    try:
        data = yaml.load(read_utf8(path), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(path, err)) from None
    if data is None:  # an empty file, or only comments
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Resolve a config: dataclass defaults < ``base`` < YAML file < dotted overrides < flags.

    Args:
        cls: The root config dataclass.
        path: Optional YAML file (``--config``).
        overrides: Strings ``a.b=value``; values are parsed as YAML scalars.
        base: Optional mapping applied first (a named preset).
        flags: ``{"a.b": value}`` from a command's own flags; None values (flags not given)
            are skipped.

    Returns:
        The checked config.

    Raises:
        ConfigError: On a bad file, an unknown key or a wrongly typed value.
    """
    tree = to_dict(cls())
    if base:
        tree = _deep_merge(tree, base)
    in_file = ""
    if path is not None:
        file = shipped_or_given(path)
        tree = _deep_merge(tree, read_yaml(file))
        try:  # checked here too, so that a value wrong in the file names the file
            from_dict(cls, tree)
        except ConfigError as err:
            in_file = f"{file}: {err}"
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, _, raw = item.partition("=")
        _set_dotted(tree, key.strip(), _Override.of(raw.strip()))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return from_dict(cls, tree)
    except ConfigError as err:
        # The file's own mistake first, unless an override or a flag replaced its value.
        raise ConfigError(in_file or str(err)) from None


def shipped_or_given(path: str | os.PathLike[str]) -> Path:
    """``path``, or for a relative ``configs/...`` path that does not exist here the preset the
    package ships under that name: ``--config configs/demo/cdm.yaml`` then works from any
    folder, as the commands' examples write it, not only from a checkout's root."""
    given = Path(path)
    parts = given.parts
    if given.exists() or given.is_absolute() or len(parts) < 2 or parts[0] != "configs":
        return given
    from importlib.resources import files

    shipped = Path(str(files("worldboot").joinpath(*parts)))
    return shipped if shipped.is_file() else given


def preset_file(group: str, name: str) -> Path:
    """The shipped YAML preset ``configs/<group>/<name>.yaml`` inside the installed package."""
    from importlib.resources import files

    return Path(str(files("worldboot").joinpath("configs", group, f"{name}.yaml")))


def load_preset(
    cls: type[T],
    group: str,
    name: str,
    names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    kind: str = "",
    prefix: str = "",
) -> T:
    """The named preset ``configs/<group>/<prefix><name>.yaml`` (shipped with the package),
    changed by an optional YAML file and dotted overrides, as :func:`load_config` resolves them.

    Raises:
        ConfigError: For a name not in ``names`` (``kind`` says of what, e.g. ``"demo"``) or a bad key.
    """
    if name not in names:
        what = f"{kind} preset" if kind else "preset"
        raise ConfigError(f"unknown {what} {name!r}; choose from {', '.join(names)}")
    return load_config(cls, path, overrides, base=read_yaml(preset_file(group, prefix + name)))


def dump_yaml(cfg: Any) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


