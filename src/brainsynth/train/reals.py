"""The real training images of a run, resident in memory at the current resolution.

The DATASET's train split (of one fold) is read once. The config's resolution is the
dataset's image size unless ``train.resolution`` says otherwise: then the images are resized
once (a power-of-two ratio by 2x2 average pooling, any other downscale by area
interpolation; an image SMALLER than the resolution is refused, since upsampling would only
invent detail), and kept as uint8. At each resolution change they are pooled down once to a
float tensor in [-1, 1] on the device; a step only indexes that tensor.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth import LABELS
from brainsynth.errors import ConfigError, InputError

log = logging.getLogger("brainsynth.train.reals")

POOL_CHUNK = 512  # images pooled at once when changing resolution (bounds peak memory)


def pool_to(x: torch.Tensor, res: int) -> torch.Tensor:
    """Downscale ``[N, 1, S, S]`` float images to ``res`` by repeated 2x2 average pooling."""
    while x.shape[-1] > res:
        x = F.avg_pool2d(x, 2)  # [N, 1, S/2, S/2]
    return x


class RealImages:
    """The train split, resident at the current resolution.

    Parameters
    ----------
    dataset : path
        Prepared DATASET folder.
    resolution : int or None
        The config's final resolution; None takes the dataset's image size.
    device : torch.device
    fold : (int, int)
        ``(repeat, fold)`` of the dataset's cross-validation whose train split is used.
    """

    def __init__(self, dataset: str | Path, resolution: int | None, device: torch.device,
                 fold: tuple[int, int] = (0, 0)):
        from brainsynth.data.dataset import load_dataset

        ds = load_dataset(dataset, fold=fold[1], repeat=fold[0])
        idx = ds.indices(split="train")
        if len(idx) == 0:
            raise InputError(f"{ds.root}: the dataset has no 'train' images; re-run 'brainsynth prepare'")
        labels = ds.label_indices(idx)
        base = torch.from_numpy(np.ascontiguousarray(ds.images[idx])).unsqueeze(1)  # [N, 1, S, S] uint8
        self.source_size = ds.image_size
        resolution = resolution or ds.image_size
        self.resolution = int(resolution)
        self.base = self._resize_once(base, resolution, ds.root)  # [N, 1, R, R] uint8
        self.labels = torch.from_numpy(labels).to(device)  # [N] int64
        counts = np.bincount(labels, minlength=len(LABELS))
        # Fake labels follow the data's label distribution (official AC-GAN setup).
        self.class_probs = torch.tensor(counts / counts.sum(), dtype=torch.float64)  # [C]
        self.device = device
        self.n = len(idx)
        self.res = 0
        self.images: torch.Tensor | None = None  # [N, 1, res, res] float in [-1, 1] on device
        table = ds.table.iloc[idx]
        # Which subject each row is, for sampling and clipping by person (train.pggan.dp_noise).
        _, self.subject_of_row = np.unique(table["subject"].to_numpy(), return_inverse=True)  # [N]
        self.rows_of_subject = [np.flatnonzero(self.subject_of_row == s) for s in range(self.subject_of_row.max() + 1)]
        self.summary = {
            "dataset": str(Path(ds.root).resolve()),
            "simulated": bool(ds.manifest.get("simulated", False)),
            "split": "train",
            "repeat": int(fold[0]),
            "fold": int(fold[1]),
            "image_size": int(ds.image_size),
            "resolution": int(resolution),
            "n_images": int(self.n),
            "n_images_per_label": {lbl: int(c) for lbl, c in zip(LABELS, counts)},
            "n_subjects_per_label": {lbl: int(table.loc[table["label"] == lbl, "subject"].nunique()) for lbl in LABELS},
            # The subjects too: the fingerprint of each fold's training data differs.
            "fingerprint": hashlib.sha256(self.base.numpy().tobytes() + labels.tobytes()
                                          + ",".join(sorted(set(table["subject"]))).encode()).hexdigest(),
        }

    @staticmethod
    def _resize_once(base: torch.Tensor, resolution: int, root: Path) -> torch.Tensor:
        size = base.shape[-1]
        if size == resolution:
            return base
        if size < resolution:
            raise ConfigError(f"{root}: images are {size} px but the config's train.resolution is {resolution}; "
                              f"prepare the dataset with --size {resolution}, or set train.resolution to null")
        log.warning("%s: resizing %d px images to %d px once at load", root, size, resolution)
        out = []
        for chunk in base.split(POOL_CHUNK):
            x = chunk.float()
            if size % resolution == 0 and (size // resolution) & (size // resolution - 1) == 0:
                x = pool_to(x, resolution)
            else:
                x = F.interpolate(x, size=(resolution, resolution), mode="area")
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out)

    def set_resolution(self, res: int) -> None:
        """Pool the resident images down to ``res`` (once per resolution change)."""
        if res == self.res:
            return
        self.images = None  # free the previous resolution first
        parts = [pool_to(c.float(), res).mul_(2.0 / 255.0).sub_(1.0) for c in self.base.split(POOL_CHUNK)]
        self.images = torch.cat(parts).to(self.device)  # [N, 1, res, res]
        self.res = res

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 1, res, res]`` and labels ``[B]`` of the given rows."""
        idx = idx.to(self.device)
        return self.images[idx], self.labels[idx]
