"""Dataclasses to and from JSON, strictly, and the key table of their documentation.

The machinery behind :mod:`brainsynth.evaluate.report.schema`. A :class:`Record` dataclass declares
each JSON key as a field made by :func:`json_key`, which carries the key's meaning. Writing
(:meth:`Record.to_dict`) is driven by the values: plain JSON types, NaN and infinity as ``null``.
Reading (:meth:`Record.from_dict`) is driven by the type annotations and is strict: a missing
or unknown key, or a value of the wrong type, is one :class:`~brainsynth.errors.InputError`
line naming the file and the key's path.

Numbers: an ``Optional[float]`` field reads ``null`` (and, from the maths, NaN) as ``None``; a
plain ``float`` field reads ``null`` as NaN, since that is how a NaN was written, so every file
written here reads back.

Supported annotations: ``float``, ``int``, ``str``, ``bool``, ``Optional[X]``, ``list[X]``,
``tuple[X, ...]`` of fixed length (a JSON list), ``dict[str | int, X]``, ``Any`` (free form) and
other records.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping, Union

import numpy as np

from brainsynth.errors import InputError
from brainsynth.options import suggest


def json_key(doc: str, *, default: Any = dataclasses.MISSING, flatten: bool = False, keys: str = "key") -> Any:
    """A dataclass field that is a key of the JSON file, with its meaning (units, range, how computed).

    Parameters
    ----------
    doc : str
        One or two sentences for ``docs/report-schema.md``.
    default : optional
        Default value (e.g. a document's ``schema_version``); most keys have none.
    flatten : bool
        For a dict field: its items sit directly in the parent JSON object, beside the other
        keys (SWD levels beside ``avg``, earlier stages beside this command's timings).
    keys : str
        For a dict field: what its keys are, shown as ``<keys>`` in documented paths.
    """
    return field(default=default, metadata={"doc": doc, "flatten": flatten, "keys": keys})


def optional_number(value: Any) -> float | None:
    """A finite float, or ``None`` for ``None``, NaN, infinity and anything non-numeric."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# --- the JSON conversion, driven by the type annotations --------------------------------------

class Record:
    """Base of the report dataclasses: strict JSON in, plain JSON out.

    ``derived_keys`` name read-only properties that are written to JSON too and, on reading,
    must agree with the fields they derive from (kept for readers of the earlier layout).
    """

    derived_keys: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, NaN and infinity as ``None``, keys in declaration order."""
        return _to_json(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "report.json") -> Any:
        """Rebuild from :meth:`to_dict`'s output; every key must be present and known.

        Raises
        ------
        InputError
            Naming ``source`` and the path of the first key that is missing, unknown or of
            the wrong type.
        """
        return _read(data, cls, _Where(source, ""))


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        out = {key: _to_json(getattr(value, key)) for key in value.derived_keys}
        taken = {f.name for f in fields(value)} | set(value.derived_keys)  # type: ignore[arg-type]
        for f in fields(value):  # type: ignore[arg-type]
            item = _to_json(getattr(value, f.name))
            if f.metadata.get("flatten"):
                clash = sorted(set(item) & taken)
                if clash:
                    raise ValueError(f"{type(value).__name__}.{f.name}: key {clash[0]!r} would overwrite a field")
                out.update(item)
            else:
                out[f.name] = item
        return out
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_json(value.tolist())
    if isinstance(value, np.generic):
        return _to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class _Where:
    """Where a value sits in the file, for error messages."""

    source: str
    path: str

    def __truediv__(self, key: Any) -> _Where:
        return _Where(self.source, f"{self.path}.{key}" if self.path else str(key))

    def error(self, problem: str) -> InputError:
        return InputError(f"{self.source}: {self.path or 'top level'}: {problem}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_record(hint: Any) -> bool:
    return typing.get_origin(hint) is None and isinstance(hint, type) and issubclass(hint, Record)


def _read(data: Any, hint: Any, where: _Where) -> Any:
    """``data`` (parsed JSON) as the annotated type ``hint``, checked all the way down."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return data
    if _is_record(hint):
        return _read_record(data, hint, where)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        if data is None or (inner is float and _is_number(data) and not math.isfinite(float(data))):
            return None
        return _read(data, inner, where)
    if origin is list:
        if not isinstance(data, (list, tuple)):
            raise where.error(f"expected a list, got {_kind(data)}")
        (item,) = typing.get_args(hint)
        return [_read(x, item, where / i) for i, x in enumerate(data)]
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(data, (list, tuple)) or len(data) != len(items):
            raise where.error(f"expected a list of {len(items)} values, got {data!r}")
        return tuple(_read(x, t, where / i) for i, (x, t) in enumerate(zip(data, items)))
    if origin is dict:
        if not isinstance(data, Mapping):
            raise where.error(f"expected an object, got {_kind(data)}")
        key_type, value_type = typing.get_args(hint)
        return {_read_key(k, key_type, where): _read(v, value_type, where / k) for k, v in data.items()}
    return _read_scalar(data, hint, where)


def _read_key(key: Any, key_type: type, where: _Where) -> Any:
    if key_type is int:
        try:
            return int(key)
        except (TypeError, ValueError):
            raise where.error(f"key {key!r} is not a whole number") from None
    return str(key)


def _read_scalar(data: Any, hint: type, where: _Where) -> Any:
    if hint is float:
        if data is None:
            return math.nan  # how a NaN was written
        if _is_number(data):
            return float(data)
    elif hint is int:
        if _is_number(data) and isinstance(data, (int, np.integer)):
            return int(data)
    elif hint is bool:
        if isinstance(data, (bool, np.bool_)):
            return bool(data)
    elif hint is str:
        if isinstance(data, str):
            return data
    else:
        raise TypeError(f"{where.path}: unsupported annotation {hint!r}")
    raise where.error(f"expected {hint.__name__}, got {_kind(data)} {data!r}")


def _read_record(data: Any, cls: type[Record], where: _Where) -> Record:
    if not isinstance(data, Mapping):
        raise where.error(f"expected an object ({cls.__name__}), got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    all_fields = fields(cls)  # type: ignore[arg-type]
    flat = [f for f in all_fields if f.metadata.get("flatten")]
    named = [f.name for f in all_fields if not f.metadata.get("flatten")]
    expected = [*cls.derived_keys, *named]
    missing = [k for k in expected if k not in data]
    if missing:
        raise where.error(f"missing key {missing[0]!r} (expected {', '.join(expected)})")
    rest = {k: v for k, v in data.items() if k not in expected}
    if rest and not flat:
        key = next(iter(rest))
        raise where.error(f"unknown key {key!r}{suggest(key, expected)}; expected {', '.join(expected)}")
    values = {name: _read(data[name], hints[name], where / name) for name in named}
    for f in flat:
        values[f.name] = _read(rest, hints[f.name], where)
    obj = cls(**values)
    for key in cls.derived_keys:
        if _to_json(getattr(obj, key)) != _to_json(data[key]):
            raise where.error(f"{key} = {data[key]!r} disagrees with the value it repeats ({getattr(obj, key)!r})")
    return obj


# --- documentation -----------------------------------------------------------------------------

def _type_words(hint: Any, keys: str = "key") -> str:
    """``number or null``, ``list of text``, ``{<label>: integer}``, ... for the documentation."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_type_words(inner, keys)} or null"
    if origin is tuple:
        return f"[{', '.join(_type_words(a) for a in typing.get_args(hint))}]"
    if origin is list:
        return f"list of {_type_words(typing.get_args(hint)[0])}"
    if origin is dict:
        value = typing.get_args(hint)[1]
        return "free-form object" if value is Any else f"{{<{keys}>: {_type_words(value)}}}"
    if _is_record(hint):
        return "object"
    return {float: "number", int: "integer", str: "text", bool: "true/false"}.get(hint, "any")


def _nested_record(hint: Any) -> tuple[type[Record] | None, str]:
    """The record type inside ``hint`` (Optional/list/dict peeled) and the path suffix it adds."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _nested_record(inner)
    if origin is list:
        cls, suffix = _nested_record(typing.get_args(hint)[0])
        return cls, "[]" + suffix
    if origin is dict:
        cls, suffix = _nested_record(typing.get_args(hint)[1])
        return cls, ".<{keys}>" + suffix
    if _is_record(hint):
        return hint, ""
    return None, ""


def schema_rows(cls: type[Record], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key path, type, meaning)`` of every key ``cls`` writes, depth first, in file order."""
    hints = typing.get_type_hints(cls)
    rows = []
    for key in cls.derived_keys:
        prop = getattr(cls, key)
        rows.append((prefix + key, _type_words(typing.get_type_hints(prop.fget)["return"]), prop.__doc__ or ""))
    for f in fields(cls):  # type: ignore[arg-type]
        keys = f.metadata["keys"]
        path = prefix + (f"<{keys}>" if f.metadata["flatten"] else f.name)
        hint = typing.get_args(hints[f.name])[1] if f.metadata["flatten"] else hints[f.name]  # a flattened dict's items
        rows.append((path, _type_words(hint, keys), f.metadata["doc"]))
        nested, suffix = _nested_record(hints[f.name])
        if nested is not None and not f.metadata["flatten"]:
            rows += schema_rows(nested, path + suffix.format(keys=keys) + ".")
    return rows
