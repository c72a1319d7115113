"""Where an experiment's ``ml_collections.ConfigDict`` becomes a frozen, validated dataclass.

``from_config(cls, config)`` walks the dataclass's fields: nested dataclasses recurse, tuples are
built from lists, every key must be a field (a typo is named with its full path and the known
fields), and each dataclass's own ``__post_init__`` checks values. This is the only place a
ConfigDict enters the library. ``load_experiment(spec)`` reads one from an experiment file; it is
here, beside ``parse_variant``, so that experiment files (which may import only this module from
r1jax) can build on one another.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config field that does not exist or holds a value of the wrong kind."""


def _as_mapping(value: Any) -> Mapping | None:
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{path}: {value!r} fits none of {options}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        mapping = _as_mapping(value)
        if mapping is None:
            raise ConfigError(f"{path}: expected a group of settings, got {value!r}")
        return from_config(tp, mapping, path)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in
                     enumerate(zip(args or [Any] * len(value), value)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        mapping = _as_mapping(value)
        if mapping is None:
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(mapping)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_config(cls: type, config: Any, path: str = "config") -> Any:
    """``cls(**config)`` with nested conversion and errors that name the field and the fix."""
    mapping = _as_mapping(config)
    if mapping is None:
        raise ConfigError(f"{path}: expected a group of settings, got {config!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown setting; {cls.__name__} has "
                          f"{sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{path}.{name}")
              for name, value in mapping.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A frozen config back to plain JSON-able data (for checkpoints and reports)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_variant(arg: str | None, types: Mapping[str, Any], experiment: str,
                  flags: tuple[str, ...] = ()) -> dict:
    """``"key=value,…"`` (the part of ``--config=file.py:arg`` after the colon) as a dict of values
    parsed by ``types[key]``; a bare ``flag`` from ``flags`` gives ``{flag: True}``. An unknown key
    or a bad value names the experiment and the item."""
    values = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep and key in flags:
            values[key] = True
            continue
        if not sep or key not in types:
            expected = "key=value with key in " + str(sorted(types))
            if flags:
                expected += f", or one of {sorted(flags)}"
            raise ValueError(f"{experiment}: bad argument {item!r}; expected {expected}")
        try:
            values[key] = types[key](value)
        except ValueError:
            raise ValueError(f"{experiment}: {key}={value!r} is not a valid value") from None
    return values


def load_experiment(spec: str):
    """``get_config(arg)`` of ``path/to/experiment.py[:arg]`` (the ``--config`` syntax)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(
        "r1jax_experiment_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
