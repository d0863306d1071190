"""One writer per folder: a training run or a `brainsynth run` output folder is held by one process.

Two commands writing one folder (two terminals, or a scheduler's retry started while the
first attempt still runs) would interleave their checkpoints and logs into a run that is
neither. The holder takes an exclusive ``fcntl.flock`` on ``FOLDER/.brainsynth.lock``. The
kernel releases it when the holder's process ends in any way, ``kill -9`` included, so a
crash leaves nothing stale to clean up: the file may stay, the lock does not. A second
process is refused at once, before it reads or changes anything, with the holder's PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from brainsynth.errors import FolderBusyError

LOCK_FILE = ".brainsynth.lock"


def folder_contents(folder: Path) -> list[Path]:
    """What a folder holds, its lock file aside (an empty list for a missing folder)."""
    return [p for p in folder.iterdir() if p.name != LOCK_FILE] if folder.is_dir() else []


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file (its PID and host), or a placeholder."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode("utf-8", "replace").strip()
    return text or "a process that has not written its PID yet"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for this process until the block ends.

    Parameters
    ----------
    folder : path
        The folder to hold.
    what : str
        What the folder is, for the message (``"training run"``, ``"run folder"``).

    Raises
    ------
    FolderBusyError
        Another process holds it; the message names the folder and the holder's PID.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    failed = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(f"{folder}: this {what} is being written by another brainsynth process "
                                  f"({_holder(fd)}); wait for it to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        try:
            yield folder
        except BaseException:
            failed = True
            raise
    finally:
        if failed and created:
            _remove_if_untouched(folder)
        os.close(fd)  # closing the last descriptor releases the lock


def _remove_if_untouched(folder: Path) -> None:
    """Remove a folder the lock created, if nothing but the lock file was written into it.

    A command refused before it wrote anything then leaves no trace; a race with another
    process that has just opened the folder leaves it in place, which is harmless.
    """
    with contextlib.suppress(OSError):
        if not folder_contents(folder):
            os.unlink(folder / LOCK_FILE)
            folder.rmdir()
