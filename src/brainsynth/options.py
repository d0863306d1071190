"""Typed settings: check a value against a dataclass field's type, with one-line errors.

The machinery behind :mod:`brainsynth.config`. Every value, whether it comes from a preset,
a user's YAML file, ``--set`` or a command-line flag, passes through :func:`set_field`,
so a wrong type or an unknown key is one :class:`~brainsynth.errors.ConfigError` line that
names where the value came from and, for a misspelt name, the nearest valid one (the
"did you mean" of MONAI's ``look_up_option``).

A field may declare its allowed values as ``metadata={"choices": (...)}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from functools import lru_cache
from typing import Any, Iterable, Union

import yaml

from brainsynth.errors import ConfigError


def choices(*values: str) -> dict[str, tuple[str, ...]]:
    """Field metadata naming the allowed values: ``field(default="x", metadata=choices("x", "y"))``."""
    return {"choices": tuple(values)}


def suggest(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


@lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a dataclass (cached)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_choices(cls: type, key: str) -> tuple[str, ...] | None:
    for f in dataclasses.fields(cls):
        if f.name == key:
            return f.metadata.get("choices")
    return None


def type_name(tp: Any) -> str:
    """A readable name of a type annotation: ``int or null``, ``mapping {int: int}``, ..."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        names = [type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or null" if type(None) in args else text
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping {{{type_name(k)}: {type_name(v)}}}"
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to type ``tp``; raise ``ValueError`` when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except ValueError:
                continue
        raise ValueError
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise ValueError
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt): coerce(v, vt) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [coerce(v, typing.get_args(tp)[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.replace("_", ""))  # "600_000" from a YAML 1.2 habit
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "on" if value else "off"  # YAML 1.1 reads a bare off/on (e.g. augment: off) as a bool
        raise ValueError
    raise ValueError


def check_key(cls: type, key: Any, source: str, section: str) -> str:
    """``key`` if it is a field of ``cls``, else a ConfigError listing the valid keys."""
    valid = field_types(cls)
    if key not in valid:
        where = f"{section}." if section else ""
        raise ConfigError(f"{source}: unknown key {where}{key}{suggest(str(key), valid)}; valid keys of "
                          f"{section or 'this section'}: {', '.join(valid)}")
    return key


def set_field(obj: Any, key: str, value: Any, source: str, section: str = "") -> None:
    """Type-check ``value`` against field ``key`` of dataclass instance ``obj`` and store it.

    Parameters
    ----------
    obj : dataclass instance
    key : str
    value : any
        As read from YAML, ``--set`` or a flag.
    source : str
        Where the value came from (``"preset 'demo'"``, ``"--set train.lr=x"``, ``"--size"``).
    section : str
        The section's name, for messages (``"prepare"``, ``"train.pggan"``).
    """
    cls = type(obj)
    check_key(cls, key, source, section)
    tp = field_types(cls)[key]
    where = f"{section}.{key}" if section else key
    try:
        coerced = coerce(value, tp)
    except (ValueError, TypeError):
        name = type_name(tp)
        article = "an" if name[0] in "aeiou" else "a"
        raise ConfigError(f"{source}: {where} must be {article} {name}, got {value!r}") from None
    allowed = field_choices(cls, key)
    if allowed and coerced not in allowed:
        raise ConfigError(
            f"{source}: {where} must be one of {', '.join(allowed)}, got {coerced!r}{suggest(coerced, allowed)}")
    setattr(obj, key, coerced)


class ConfigLoader(yaml.SafeLoader):
    """YAML as people type config values.

    PyYAML follows YAML 1.1, which reads ``4:8`` as the base-60 integer 248 and ``1e-3`` as a
    string. This loader reads numbers as YAML 1.2 does (no base 60; ``1e-3`` is a float), and
    :func:`load_yaml` then reads a flow-mapping entry typed without its space (``{4:8}``, which
    YAML sees as the key ``"4:8"`` with no value) as the pair ``4: 8``.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
                                   list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*\.[0-9_]*"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

_UNSPACED_PAIR = re.compile(r"^([^:\s]+):([^:\s].*)$")


def load_yaml(text: str) -> Any:
    """Parse config YAML with :class:`ConfigLoader` (raises ``yaml.YAMLError``)."""
    return _split_unspaced_pairs(yaml.load(text, Loader=ConfigLoader))


def _split_unspaced_pairs(value: Any) -> Any:
    if isinstance(value, list):
        return [_split_unspaced_pairs(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        match = _UNSPACED_PAIR.match(key) if isinstance(key, str) and item is None else None
        if match:
            key, item = (yaml.load(part, Loader=ConfigLoader) for part in match.groups())
        out[key] = _split_unspaced_pairs(item)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (``8`` -> int, ``true`` -> bool, ``{4:8}`` -> {4: 8})."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.total_images=20000")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    return key, value


def as_dict(obj: Any) -> dict[str, Any]:
    """Plain-type dict of a dataclass instance (safe for YAML, JSON and ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(obj)
