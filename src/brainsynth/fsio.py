"""Crash-safe file output: write to a temporary name beside the target, then rename.

Every file or folder brainsynth produces goes through these helpers, so an interrupted
command never leaves a half-written output and never silently replaces what the user had.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from brainsynth.errors import OutputExistsError


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is flushed.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    # mkstemp/mkdtemp create private 0600/0700 entries; outputs get what open()/mkdir() would.
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_output_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file to; it is renamed onto ``path`` on success.

    For writers that want a filename (``torch.save``, ``np.save``, ``PIL.Image.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    _fsync_dir(path.parent)


def check_output_free(path: str | os.PathLike, force: bool, option: str = "--out") -> Path:
    """Refuse an existing, non-empty output path unless ``force``; return it as a Path."""
    path = Path(path)
    if path.exists() and not force:
        if path.is_dir() and not any(path.iterdir()):
            return path
        raise OutputExistsError(
            f"{path} already exists; choose another {option} or pass --force to replace it"
        )
    return path


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike, force: bool = False, option: str = "--out") -> Iterator[Path]:
    """Build an output folder under a temporary name and move it into place on success.

    The caller writes everything into the yielded folder. If the body raises, the staging
    folder is removed and ``path`` is untouched. An existing ``path`` is only replaced when
    ``force`` is true, and only after the new folder is complete.
    """
    path = check_output_free(path, force, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    os.chmod(stage, 0o777 & ~_umask())
    if path.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, trash / "old")
        os.replace(stage, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(stage, path)
    _fsync_dir(path.parent)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
