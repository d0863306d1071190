"""Find subjects, their T1 volume and their diagnosis in the three input layouts.

* BIDS: ``participants.tsv`` + ``sub-*/anat/*_T1w.nii[.gz]`` or
  ``sub-*/ses-*/anat/*_T1w.nii[.gz]`` (the simulated cohort of ``brainsynth phantom``).
* An ADHD-200 site folder: BIDS with a ``dx`` column (codes or text, see :mod:`labels`).
* A flat folder of ``.nii``/``.nii.gz`` files, named by subject id, with ``--labels FILE``.

A BIDS folder may also take its labels from ``--labels``; a flat folder may carry its own
``participants.tsv``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from brainsynth.data.labels import LabelTable, check_subject_id, list_items, read_label_table, subject_key
from brainsynth.errors import ConfigError, InputError

log = logging.getLogger("brainsynth.layouts")

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PARTICIPANTS_FILE = "participants.tsv"
DESCRIPTION_FILE = "dataset_description.json"


@dataclass(frozen=True)
class InputSpec:
    """How to read a user's cohort: which table holds the diagnoses, and what to do with gaps.

    Attributes
    ----------
    labels : str or None
        CSV/TSV of diagnoses (default ``INPUT/participants.tsv``; a flat folder needs one).
    id_column, label_column : str or None
        Columns of that table (detected from common names by default).
    skip_unlabeled : bool
        Drop, with a warning, subjects without a usable label and rows without a volume,
        instead of stopping.
    volume_index : int or None
        Which volume of 4D files to use.
    """

    labels: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    skip_unlabeled: bool = False
    volume_index: int | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", str(self.labels))
        if self.volume_index is not None and (isinstance(self.volume_index, bool) or int(self.volume_index) < 0
                                              or int(self.volume_index) != self.volume_index):
            raise ConfigError(f"--volume-index must be a whole number >= 0, got {self.volume_index!r}")


@dataclass(frozen=True)
class Subject:
    """One subject to prepare.

    Attributes
    ----------
    id : str
        The subject id as the dataset records it (BIDS folder name such as ``sub-01``, or
        the file stem of a flat folder).
    label : str
        ``"adhd"`` or ``"control"``.
    path : Path
        The volume file.
    source : str
        ``path`` relative to the input folder (recorded in the manifest).
    """

    id: str
    label: str
    path: Path
    source: str


@dataclass
class Cohort:
    """What :func:`discover_cohort` found.

    Attributes
    ----------
    root : Path
    layout : str
        ``"bids"`` or ``"flat"``.
    subjects : list of Subject
        Sorted by id; only those with a volume and a label.
    label_table : LabelTable
    simulated : bool
        True when the input's ``dataset_description.json`` says it is simulated.
    dropped : dict
        ``{"no_label": [...], "unlabelled": [...], "no_image": [...]}`` ids dropped by
        ``--skip-unlabeled``.
    """

    root: Path
    layout: str
    subjects: list[Subject]
    label_table: LabelTable
    simulated: bool = False
    dropped: dict[str, list[str]] = field(default_factory=dict)


def strip_nifti_suffix(name: str) -> str | None:
    """File name without ``.nii``/``.nii.gz``; None when it is not a NIfTI name."""
    lower = name.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def is_simulated(root: Path) -> bool:
    """Whether ``root/dataset_description.json`` marks the data as simulated.

    A truthy ``"Simulated"`` key (any case), or the word ``SIMULATED`` in its name or
    description, as ``brainsynth phantom`` writes it.
    """
    path = root / DESCRIPTION_FILE
    if not path.is_file():
        return False
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: not valid JSON; ignored", path)
        return False
    if not isinstance(description, dict):
        return False
    for key, value in description.items():
        if str(key).lower() == "simulated":
            return bool(value) and str(value).strip().lower() not in ("false", "no", "0")
    return "SIMULATED" in json.dumps(description)


def _bids_volumes(root: Path) -> dict[str, list[Path]]:
    """``sub-* folder name -> sorted T1w files`` (sessionless and per-session)."""
    found: dict[str, list[Path]] = {}
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        files = [
            p for pattern in ("anat/*_T1w.nii*", "ses-*/anat/*_T1w.nii*")
            for p in sub_dir.glob(pattern) if p.is_file() and strip_nifti_suffix(p.name) is not None
        ]
        if files:
            found[sub_dir.name] = sorted(files, key=lambda p: p.relative_to(sub_dir).as_posix())
    return found


def _pick_first_volume(subject_id: str, files: list[Path], root: Path) -> Path:
    if len(files) > 1:
        log.info("%s: %d T1w volumes (sessions/runs); using the first, %s", subject_id, len(files),
                 files[0].relative_to(root).as_posix())
    return files[0]


def _flat_volumes(root: Path) -> dict[str, list[Path]]:
    """``file stem -> [file]`` for the NIfTI files directly in ``root``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        stem = strip_nifti_suffix(path.name)
        if stem is not None and path.is_file():
            found.setdefault(stem, []).append(path)
    return found


def _check_unique_keys(ids: list[str], root: Path) -> None:
    """Two volumes for one subject (``01.nii`` and ``sub-01.nii.gz``; ``sub-1`` and ``sub-01``) is an error."""
    seen: dict[str, str] = {}
    for subject_id in ids:
        key = subject_key(subject_id)
        if key in seen:
            raise InputError(f"{root}: subjects {seen[key]!r} and {subject_id!r} are the same subject id; "
                             "keep one volume per subject")
        seen[key] = subject_id


def _find_volumes(root: Path) -> tuple[str, dict[str, Path]]:
    """The layout and ``subject id -> volume file``."""
    if any(p.is_dir() for p in root.glob("sub-*")):
        layout = "bids"
        found = _bids_volumes(root)
        if not found:
            raise InputError(f"{root}: no T1w volumes found (expected sub-*/anat/*_T1w.nii[.gz] or "
                             "sub-*/ses-*/anat/*_T1w.nii[.gz])")
        volumes = {sid: _pick_first_volume(sid, files, root) for sid, files in found.items()}
    else:
        layout = "flat"
        found = _flat_volumes(root)
        if not found:
            raise InputError(f"{root}: no volumes found; expected a BIDS folder (sub-*/anat/*_T1w.nii.gz) "
                             "or a folder of .nii/.nii.gz files")
        doubled = [stem for stem, files in found.items() if len(files) > 1]
        if doubled:
            raise InputError(f"{root}: several files for subject(s) {list_items(doubled)} (.nii and .nii.gz); "
                             "keep one volume per subject")
        volumes = {stem: files[0] for stem, files in found.items()}
    for subject_id, path in volumes.items():
        check_subject_id(subject_id, str(path))
    _check_unique_keys(list(volumes), root)
    return layout, volumes


def _label_table_path(root: Path, labels: str | Path | None, layout: str) -> Path:
    if labels is not None:
        return Path(labels)
    path = root / PARTICIPANTS_FILE
    if not path.is_file():
        if layout == "flat":
            raise InputError(f"{root}: a flat folder of volumes needs a label table; pass --labels FILE "
                             "(CSV/TSV with subject id and diagnosis columns)")
        raise InputError(f"{path}: not found; a BIDS folder needs participants.tsv with a diagnosis column, "
                         "or pass --labels FILE")
    return path


def discover_cohort(input: str | Path, source: InputSpec | None = None) -> Cohort:
    """Find every subject with a volume and a diagnosis.

    Parameters
    ----------
    input : path
        BIDS folder, ADHD-200 site folder or flat folder of NIfTI files.
    source : InputSpec, optional
        The label table and how to read it (defaults: ``input/participants.tsv``, columns
        detected, unlabelled subjects refused).

    Raises
    ------
    InputError
        Missing input, no volumes, a bad label table, or unmatched subjects (without
        ``source.skip_unlabeled``).
    """
    source = source or InputSpec()
    labels, skip_unlabeled = source.labels, source.skip_unlabeled
    root = Path(input)
    if not root.exists():
        raise InputError(f"{root}: input folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; INPUT is a BIDS folder or a folder of .nii/.nii.gz files")
    layout, volumes = _find_volumes(root)
    table = read_label_table(_label_table_path(root, labels, layout), id_column=source.id_column,
                             label_column=source.label_column)

    keys = {subject_key(sid): sid for sid in volumes}
    no_label = sorted(sid for key, sid in keys.items() if key not in table.labels)
    unlabelled = sorted(sid for key, sid in keys.items() if key in table.labels and table.labels[key] is None)
    no_image = sorted(table.raw_ids[key] for key in table.labels if key not in keys)
    problems = []
    if no_label:
        problems.append(f"volumes without a row in {table.path.name}: {list_items(no_label)}")
    if unlabelled:
        problems.append(f"volumes whose diagnosis is missing/pending: {list_items(unlabelled)}")
    if no_image:
        problems.append(f"rows in {table.path.name} without a volume: {list_items(no_image)}")
    if problems and not skip_unlabeled:
        raise InputError(f"{root}: " + "; ".join(problems) + "; fix the table or pass --skip-unlabeled to drop them")
    for problem in problems:
        log.warning("dropped %s", problem)

    subjects = [
        Subject(id=sid, label=table.labels[subject_key(sid)], path=volumes[sid],
                source=volumes[sid].relative_to(root).as_posix())
        for sid in sorted(volumes) if table.labels.get(subject_key(sid)) is not None
    ]
    if not subjects:
        raise InputError(f"{root}: no subject has both a volume and a diagnosis in {table.path}")
    return Cohort(root=root, layout=layout, subjects=subjects, label_table=table, simulated=is_simulated(root),
                  dropped={"no_label": no_label, "unlabelled": unlabelled, "no_image": no_image})
