"""Reading and writing a :class:`~train.config.TrainConfig`: YAML files, ``key=value`` overrides, plain mappings.

Every value read is converted to its field's declared type (``int``, ``float``, ``list[...]``,
``tuple[...]``, ``dict[...]``, a nested dataclass, a data source picked by its ``kind``); a key
that no field names or a value of the wrong type is a ValueError naming the key and its section.
:func:`config_to_dict` writes the plain mapping (lists, dicts, scalars) that
:func:`config_from_dict` reads back: checkpoints record it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import yaml

from .config import SOURCE_KINDS, SourceConfig, TrainConfig

__all__ = ["apply_overrides", "config_from_dict", "config_to_dict", "load_config", "source_from_dict"]


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (from YAML) as type ``tp``; ValueError naming ``where`` when it does not fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin is Union or isinstance(tp, types.UnionType):
        if value is None and type(None) in args:
            return None
        if all(dataclasses.is_dataclass(a) for a in args if a is not type(None)) and len(args) > 1 \
                and args != (args[0], type(None)):
            return source_from_dict(value, where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        return _dataclass_from(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)} ({value!r})")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {_convert(k, key_type, f"{where} key"): _convert(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ValueError(f"{where}: unsupported field type {_describe(tp)}")  # pragma: no cover


def _dataclass_from(cls: type, values: Any, where: str) -> Any:
    if dataclasses.is_dataclass(values) and isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ValueError(f"{where or 'top level'}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def source_from_dict(values: Any, where: str) -> SourceConfig:
    """A data source config from a mapping whose ``kind`` picks the dataclass (``SOURCE_KINDS``);
    a source dataclass as it is. ValueError naming ``where`` otherwise."""
    if dataclasses.is_dataclass(values) and isinstance(values, tuple(SOURCE_KINDS.values())):
        return values  # type: ignore[return-value]
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: a data source must be a mapping with a 'kind', got {values!r}")
    kind = values.get("kind")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}.kind: must be one of {sorted(SOURCE_KINDS)}, got {kind!r}")
    return _dataclass_from(SOURCE_KINDS[kind], values, where)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping (unknown keys and wrong types are ValueErrors)."""
    return _dataclass_from(TrainConfig, values, "")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain mapping (lists, dicts, scalars) that :func:`config_from_dict` reads back."""
    return _jsonable(cfg)


def _set_path(tree: Any, path: list[str], value: Any, text: str) -> None:
    node = tree
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"override {text!r}: {'.'.join(path[:depth + 1])} is not an index of a "
                                 f"{len(node)}-item list")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise ValueError(f"override {text!r}: {'.'.join(path[:depth])} is not a section")


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=VALUE`` overrides (VALUE parsed as YAML) to a config mapping (a copy)."""
    tree = config_to_dict(config_from_dict(values))
    for text in overrides:
        if "=" not in text:
            raise ValueError(f"override {text!r} must look like key.sub=VALUE")
        key, raw = text.split("=", 1)
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise ValueError(f"override {text!r} names no key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise ValueError(f"override {text!r}: VALUE is not valid YAML: {error}") from error
        _set_path(tree, path, value, text)
    return tree


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None: all defaults), apply ``overrides``, check, return a TrainConfig.

    Raises ValueError naming the file and the offending key for unknown keys, wrong types or values.
    """
    values: Any = {}
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ValueError(f"cannot read config {str(path)!r}: {error}") from error
        except yaml.YAMLError as error:
            raise ValueError(f"config {str(path)!r} is not valid YAML: {error}") from error
        if not isinstance(values, Mapping):
            raise ValueError(f"config {str(path)!r} must hold a YAML mapping, got {type(values).__name__}")
    try:
        return config_from_dict(apply_overrides(values, overrides) if overrides else values)
    except ValueError as error:
        where = f"config {str(path)!r}" if path is not None else "config"
        raise ValueError(f"{where}: {error}") from error
