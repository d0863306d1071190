"""Evaluation of synthetic images: GAN-train/GAN-test, fidelity, privacy, and the report.

Layers, each importing only the ones above it:

- maths (arrays in, numbers out): :mod:`.features`, :mod:`.gan_train`, :mod:`.fidelity`,
  :mod:`.distances`, :mod:`.privacy`, :mod:`.shortcut` (global slice features), :mod:`.protocol`
  (pooled scores, cluster bootstrap, paired verdicts);
- :mod:`.schema` (on :mod:`.typed_json`): the typed ``report.json``, ``fold.json`` and ``privacy.json``;
- :mod:`.figures` (PNG bytes), :mod:`.tables` (tables, three renderers), :mod:`.targets` (targets
  judged on verdicts, the console table), :mod:`.writers` (the files);
- commands: :mod:`.folds` (one fold of the cross-validation), :mod:`.pooling` (the folds into one
  report), :mod:`.commands` (``evaluate`` and ``audit``).

The two commands are loaded on first use: they bring torch and scikit-learn, which a tool that
only reads ``report.json`` (:func:`brainsynth.evaluate.schema.read_report`) does not need.
"""

from __future__ import annotations

from typing import Any

__all__ = ["audit", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from brainsynth.evaluate import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'brainsynth.evaluate' has no attribute {name!r}")
