"""Provenance that may leave the hospital with a synthetic set: hashes yes, local paths no.

A synthetic image set's ``metadata.json`` and an exported generator's model card are the files
that get shared. A hospital's folder names can name a study or a patient, so neither may carry a
local path; both keep fingerprints and hashes (checkpoint SHA-256, training-data fingerprint),
which identify *what* was used without saying *where* it lives. Real subject ids never enter them
(nothing in a run's provenance carries one).

:func:`strip_local_paths` is the safety net applied to both files as a whole: any absolute path
left in a string (a config file named by its path, a metrics file written by other tools) is
reduced to its last component.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path (/a/b, ~/a), or a Windows one (C:\a, \\server\share), up to whitespace or a quote.
_ABSOLUTE = re.compile(r"(?<![\w.\-/])(?:~?/|[A-Za-z]:[\\/]|\\\\)[^\s'\"]+")


def strip_path(text: str) -> str:
    """``text`` with each absolute path in it replaced by the path's last component."""
    def last(match: re.Match) -> str:
        parts = [p for p in re.split(r"[\\/]+", match.group(0)) if p and not p.endswith(":") and p != "~"]
        return parts[-1] if parts else ""

    return _ABSOLUTE.sub(last, text)


def strip_local_paths(value: Any) -> Any:
    """A copy of a JSON-like ``value`` whose strings (keys included) hold no absolute path."""
    if isinstance(value, str):
        return strip_path(value)
    if isinstance(value, dict):
        return {strip_local_paths(k) if isinstance(k, str) else k: strip_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_local_paths(v) for v in value]
    return value


def absolute_paths(value: Any) -> list[str]:
    """Every absolute path found in the strings of a JSON-like ``value`` (for checks and tests)."""
    found: list[str] = []
    if isinstance(value, str):
        found += _ABSOLUTE.findall(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            found += absolute_paths(k) + absolute_paths(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += absolute_paths(v)
    return found
