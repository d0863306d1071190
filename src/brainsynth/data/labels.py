"""Label tables: which column holds the subject id and the diagnosis, and what each value means.

This module is the one place for the facts about diagnosis tables:

* the column names brainsynth recognises (BIDS ``participants.tsv``, ADHD-200 phenotypic
  CSVs with ``ScanDir ID`` / ``DX``, and common hand-made tables);
* how a raw diagnosis value maps to one of :data:`brainsynth.LABELS`. ADHD-200 codes DX as
  0 = typically developing, 1 = ADHD combined, 2 = ADHD hyperactive/impulsive,
  3 = ADHD inattentive, -999 = missing, and "pending" in its test release;
* how subject ids are compared: with or without the BIDS ``sub-`` prefix, and with
  leading zeros ignored for all-digit ids (ADHD-200 ids are 7 digits, often stored as
  plain integers).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brainsynth.errors import InputError

log = logging.getLogger("brainsynth.labels")

ID_COLUMNS = ("participant_id", "subject_id", "subject", "subjid", "sub", "scandir id", "participant", "id")
"""Subject-id column names tried in this order (compared case- and separator-insensitively)."""

LABEL_COLUMNS = ("diagnosis", "dx", "dx_group", "group", "label", "class")
"""Diagnosis column names tried in this order (compared case- and separator-insensitively)."""

CONTROL_VALUES = frozenset({
    "control", "controls", "hc", "healthy", "healthy control", "nc", "normal", "td", "tdc",
    "typically developing", "typically developing child", "typically developing children", "0",
})
ADHD_VALUES = frozenset({"adhd", "1", "2", "3"})
"""Besides these, any text starting with "adhd" (ADHD-Combined, ADHD-Inattentive, ...) is ADHD."""

MISSING_VALUES = frozenset({"", "n/a", "na", "nan", "none", "null", "pending", "missing", "-999", "-9999"})
"""Values meaning "no diagnosis yet": the subject is unlabelled (see ``--skip-unlabeled``)."""

_MAX_LISTED = 10  # how many offending values an error message lists before "... and N more"


def list_items(items, limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` for an error message, shortened to ``limit`` items plus a count."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _normalise_text(value: str) -> str:
    text = str(value).strip().lower()
    # Spreadsheets turn codes into floats ("1.0", "-999.0"): compare them as integers.
    try:
        number = float(text)
    except ValueError:
        return re.sub(r"[\s_\-]+", " ", text).strip()
    return str(int(number)) if number.is_integer() else text


def parse_label(value: object) -> str | None:
    """Map a raw diagnosis value to ``"adhd"``, ``"control"`` or ``None`` (unlabelled).

    Parameters
    ----------
    value : object
        A cell of the label column: text ("ADHD-Combined", "Typically Developing", "HC")
        or a code (0, 1, 2, 3, -999), case-insensitive.

    Raises
    ------
    ValueError
        When the value is none of the known forms (the caller lists all such values).
    """
    text = "" if value is None else _normalise_text(value)
    if text in MISSING_VALUES:
        return None
    if text in CONTROL_VALUES:
        return "control"
    if text in ADHD_VALUES or text.startswith("adhd"):
        return "adhd"
    raise ValueError(f"unknown label {value!r}")


def subject_key(raw_id: str) -> str:
    """The form in which subject ids are compared: no ``sub-`` prefix, no leading zeros in digit ids.

    ``"sub-0010001"``, ``"0010001"`` and ``"10001"`` all give ``"10001"``.
    """
    text = str(raw_id).strip()
    if text.lower().startswith("sub-"):
        text = text[4:]
    if text.isdigit():
        text = text.lstrip("0") or "0"
    return text


def unsafe_id_reason(raw_id: str) -> str | None:
    """Why ``raw_id`` cannot be used as a subject id (it may become part of a file name), or None."""
    text = str(raw_id)
    if not text.strip():
        return "is empty"
    if "/" in text or "\\" in text:
        return "contains a path separator"
    if text.strip(".") == "" or text.startswith(".."):
        return "is a relative path"
    if any(ord(ch) < 32 for ch in text):
        return "contains a control character (tab, newline)"
    return None


def check_subject_id(raw_id: str, where: str) -> None:
    """Raise :class:`InputError` naming ``where`` when ``raw_id`` is unsafe as a file name."""
    reason = unsafe_id_reason(raw_id)
    if reason:
        raise InputError(f"{where}: subject id {raw_id!r} {reason}; rename it to letters, digits, '-' or '_'")


@dataclass
class LabelTable:
    """Diagnoses read from a CSV/TSV table.

    Attributes
    ----------
    path : Path
    id_column, label_column : str
        The columns used.
    labels : dict
        ``subject_key(id) -> "adhd" | "control" | None`` (None: listed but unlabelled).
    raw_ids : dict
        ``subject_key(id) -> id`` as written in the table (for messages).
    """

    path: Path
    id_column: str
    label_column: str
    labels: dict[str, str | None] = field(default_factory=dict)
    raw_ids: dict[str, str] = field(default_factory=dict)


def _column_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def find_column(columns, requested: str | None, candidates, what: str, option: str, path: Path) -> str:
    """Pick the id or label column: the one the user named, else the first known candidate.

    Raises
    ------
    InputError
        Listing the columns found, when no column matches.
    """
    by_key = {_column_key(c): c for c in columns}
    wanted = [requested] if requested else list(candidates)
    for name in wanted:
        if name in columns:
            return name
        if _column_key(name) in by_key:
            return by_key[_column_key(name)]
    found = list_items(repr(c) for c in columns)
    if requested:
        raise InputError(f"{path}: no {what} column {requested!r} (columns found: {found}); fix {option}")
    raise InputError(
        f"{path}: no {what} column found (looked for {', '.join(candidates)}; columns found: {found}); "
        f"name it with {option}"
    )


def sniff_delimiter(path: Path, sample: str) -> str:
    """Tab, comma or semicolon: the csv module's sniffer, else the most frequent one in the header."""
    try:
        return csv.Sniffer().sniff(sample, delimiters="\t,;").delimiter
    except csv.Error:
        header = sample.splitlines()[0] if sample else ""
        counts = {d: header.count(d) for d in "\t,;"}
        best = max(counts, key=counts.get)
        if counts[best] == 0:
            return "\t" if path.suffix.lower() == ".tsv" else ","
        return best


def read_label_table(path: str | Path, *, id_column: str | None = None, label_column: str | None = None) -> LabelTable:
    """Read a diagnosis table (CSV or TSV, detected by sniffing).

    Parameters
    ----------
    path : path
        The table; ``participants.tsv`` of a BIDS folder or the ``--labels`` file.
    id_column, label_column : str, optional
        Column names; detected from :data:`ID_COLUMNS` / :data:`LABEL_COLUMNS` when None.

    Raises
    ------
    InputError
        Missing or unreadable file, missing columns, unsafe or duplicate ids, or unknown
        label values (all of them listed).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: label table not found; pass an existing CSV/TSV with --labels")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            sample = f.read(64 * 1024)
        table = pd.read_csv(path, sep=sniff_delimiter(path, sample), dtype=str, keep_default_na=False,
                            encoding="utf-8-sig", skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the label table ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                         "expected a CSV or TSV file with a header row") from None
    table.columns = [str(c).strip() for c in table.columns]
    id_col = find_column(list(table.columns), id_column, ID_COLUMNS, "subject-id", "--id-column", path)
    label_col = find_column(list(table.columns), label_column, LABEL_COLUMNS, "diagnosis", "--label-column", path)
    result = LabelTable(path=path, id_column=id_col, label_column=label_col)
    unknown: list[str] = []
    for row_number, (raw_id, raw_label) in enumerate(zip(table[id_col], table[label_col]), start=2):
        raw_id = str(raw_id).strip()
        check_subject_id(raw_id, f"{path} line {row_number}")
        key = subject_key(raw_id)
        if key in result.labels:
            raise InputError(f"{path}: subject {raw_id!r} appears twice (also as {result.raw_ids[key]!r}); "
                             "keep one row per subject")
        try:
            result.labels[key] = parse_label(raw_label)
        except ValueError:
            unknown.append(str(raw_label))
        result.raw_ids[key] = raw_id
    if unknown:
        values = list_items(repr(v) for v in sorted(set(unknown)))
        raise InputError(f"{path}: unknown values in column {label_col!r}: {values}; use adhd/control "
                         "(or ADHD-200 codes 0-3; 'pending', -999 or n/a for unlabelled)")
    return result
