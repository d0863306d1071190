import pytest

from brainsynth.errors import OutputExistsError
from brainsynth.fsio import atomic_write_text, staged_output_dir


def test_staged_dir_is_removed_when_the_body_fails(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output_dir(out) as stage:
            (stage / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_then_replaced_with_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="--force"):
        with staged_output_dir(out):
            pass
    assert (out / "keep.txt").read_text() == "user data"
    with staged_output_dir(out, force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_outputs_get_ordinary_permissions_not_private_temp_ones(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with staged_output_dir(tmp_path / "d") as stage:
            (stage / "f").write_text("y")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
