import subprocess
import sys

from brainsynth import __version__
from brainsynth.cli import main


def test_version_via_module():
    out = subprocess.run([sys.executable, "-m", "brainsynth", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"brainsynth {__version__}"


def test_unknown_option_is_one_line_and_exit_2(capsys):
    try:
        main(["info", "x", "--nonsense"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --nonsense" in err[0]


def test_every_stage_command_takes_config_and_set(capsys):
    import pytest

    for command in ("phantom", "prepare", "train", "generate", "evaluate", "audit", "run"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--config PRESET|FILE" in text and "--set KEY=VALUE" in text, command
