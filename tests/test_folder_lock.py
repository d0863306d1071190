"""One writer per folder: the lock, its message, and what a refused or crashed holder leaves."""

import os
import subprocess
import sys

import pytest

from brainsynth.cli import main
from brainsynth.errors import FolderBusyError
from brainsynth.folder_lock import LOCK_FILE, folder_lock


def test_a_held_folder_refuses_a_second_holder_and_names_the_first(tmp_path):
    with folder_lock(tmp_path / "run", "training run"):
        assert (tmp_path / "run" / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(FolderBusyError) as err:
            with folder_lock(tmp_path / "run", "training run"):
                pass
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'run'}: this training run is being written by another brainsynth "
                              f"process (pid {os.getpid()} on ")
    assert "wait for it to finish or stop it, then run again" in message and "\n" not in message
    with folder_lock(tmp_path / "run"):  # released at the end of the block
        pass


def test_a_folder_the_lock_made_is_removed_when_the_holder_fails_before_writing(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "new"):
            raise RuntimeError("refused")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "kept"):
            raise RuntimeError("refused")
    assert (tmp_path / "kept").is_dir()  # it was the user's: only the lock file is left in it
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "written") as folder:
            (folder / "stats.jsonl").write_text("{}\n")
            raise RuntimeError("crashed")
    assert (tmp_path / "written" / "stats.jsonl").is_file()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    # The child takes the lock and dies by SIGKILL inside the block: the kernel releases it.
    child = (f"import os, signal\nfrom brainsynth.folder_lock import folder_lock\n"
             f"with folder_lock({str(tmp_path / 'run')!r}):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and (tmp_path / "run" / LOCK_FILE).is_file()
    with folder_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_brainsynth_run_refuses_a_folder_another_process_holds(tmp_path, capsys):
    out = tmp_path / "out"
    with folder_lock(out, "run folder"):
        code = main(["run", "--out", str(out), "--config", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"{out}: this run folder is being written by another brainsynth process (pid {os.getpid()}" in err[0]
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # the refused run wrote nothing
