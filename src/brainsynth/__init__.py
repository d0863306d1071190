"""brainsynth: synthetic brain MRI with a class-conditional progressive-growing GAN.

The Python API mirrors the command line; see :mod:`brainsynth.api`.
"""

__version__ = "0.1.0"

LABELS = ("control", "adhd")
"""Class names in index order. ADHD is the positive class (index 1) everywhere."""
