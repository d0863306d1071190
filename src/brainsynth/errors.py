"""The few exception types a user sees.

Anything raised as a :class:`BrainsynthError` is printed by the CLI as one line,
``brainsynth: error: <message>``, and ends the process with exit status 2. Messages
name the file, subject or option at fault and say how to fix it.
"""


class BrainsynthError(Exception):
    """A problem with the user's input, options or files (exit status 2)."""

    exit_code = 2


class InputError(BrainsynthError):
    """An input file, folder or table is missing, unreadable or invalid."""


class ConfigError(BrainsynthError):
    """An option or configuration value is invalid."""


class OutputExistsError(BrainsynthError):
    """The output path exists and ``--force`` was not given."""


class FolderBusyError(BrainsynthError):
    """Another process holds the output folder (a training run or a `brainsynth run` folder)."""


class CheckpointError(BrainsynthError):
    """A checkpoint or weights file is missing, corrupt, tampered or foreign."""


class FetchError(BrainsynthError):
    """Public data could not be listed or downloaded."""


class TrainingDivergedError(BrainsynthError):
    """The training losses stayed NaN/Inf after every allowed rollback."""


class SelfTestFailed(BrainsynthError):
    """``brainsynth audit --selftest`` found the audit below its detection or false-flag target (exit status 1)."""

    exit_code = 1
