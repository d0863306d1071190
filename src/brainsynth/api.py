"""The Python API: the same stages as the command line, for notebooks.

>>> from brainsynth import api
>>> api.make_cohort("cohort")                                   # brainsynth phantom
>>> api.prepare_dataset("cohort", "dataset")                    # brainsynth prepare
>>> ds = api.load_dataset("dataset"); ds.summary()              # brainsynth info
>>> api.train("dataset", "runs/pggan", model="pggan", config="demo")
>>> api.generate_images("runs/pggan", "synthetic", n=500)
>>> api.evaluate("dataset", {"pggan": "synthetic"}, "report")
>>> api.run("demo-output")                                      # brainsynth run

Names are resolved on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_cohort": "brainsynth.data.phantom",
    "prepare_dataset": "brainsynth.data.prepare",
    "load_dataset": "brainsynth.data.dataset",
    "export_images": "brainsynth.data.export",
    "fetch_adhd200": "brainsynth.data.fetch",
    "train": "brainsynth.train.loop",
    "generate_images": "brainsynth.generate",
    "export_generator": "brainsynth.export",
    "evaluate": "brainsynth.evaluate",
    "audit": "brainsynth.evaluate.privacy",
    "run": "brainsynth.pipeline",
    "read_image_set": "brainsynth.imageset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'brainsynth.api' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
