"""One volume -> 2D training images: the paper's preprocessing (Alam et al., Figure 1).

For each T1 volume:

1. check it (readable NIfTI, 3D or a chosen 4D volume, finite, not constant, sane size);
2. reorient to the closest canonical RAS orientation (``nibabel.as_closest_canonical``) and
   take axial slices along axis 2;
3. normalise intensities robustly per volume (percentiles of the brain voxels -> [0, 1]);
4. keep slices A..B inclusive (the paper's #30..#120), or a range relative to the brain's
   axial extent;
5. pad each slice to a square field of view (so anisotropic voxels keep their physical
   aspect) and resample it to ``inplane`` x ``inplane`` (the paper's 320 x 320);
6. cut ``patch`` x ``patch`` patches (one centred, or several with a stride), skip those
   that are background only, and resize each to ``size`` x ``size``.

Displayed 2D images use the neurological convention: row 0 is the most anterior row,
column 0 the subject's left.

:func:`process_volume` runs in a worker process and returns plain arrays, so a bad file
fails there with its own name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainsynth.errors import InputError
from brainsynth.fsio import sha256_file

MAX_VOLUME_BYTES = 2 * 1024**3
"""Refuse volumes whose header implies more than this as float32 (a corrupt or absurd header)."""

BACKGROUND_LEVEL = 0.02
"""A voxel is brain when above min + this fraction of the (99.9th percentile - min) range."""

NORMALISE_PERCENTILES = (0.5, 99.5)
"""Brain-voxel percentiles mapped to 0 and 1 (robust to a few hot or dark voxels)."""

MIN_BRAIN_FRACTION = 0.02
"""A patch with fewer brain pixels than this fraction is background only and skipped."""

DISPLAY_CONVENTION = "RAS canonical; axial slices, row 0 anterior, column 0 subject's left (neurological)"
RESIZE_METHOD = "PIL bilinear, antialiased when shrinking"

# Read failures nibabel raises for truncated or corrupt data (gzip errors are OSErrors).
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, MemoryError)


@dataclass(frozen=True)
class SliceSpec:
    """How to turn a volume into images: the checked ``prepare`` section, as each worker needs it.

    Attributes
    ----------
    slices : (int, int)
        Axial slice range A..B, inclusive, in the canonical volume (ignored when
        ``relative_slices`` is set).
    relative_slices : (float, float) or None
        Range as fractions of the brain's axial extent (first..last slice with brain).
    inplane : int
        Side in pixels each axial slice is resampled to; 0 keeps the voxel grid.
    patch : int
        Side in pixels of the patches cut from the resampled slice.
    patch_stride : int or None
        Stride in pixels between overlapping patches; None cuts one centred patch.
    size : int
        Side in pixels of the final images.
    volume_index : int or None
        Which volume of a 4D file to use.
    """

    slices: tuple[int, int]
    relative_slices: tuple[float, float] | None
    inplane: int
    patch: int
    patch_stride: int | None
    size: int
    volume_index: int | None


@dataclass(frozen=True)
class VolumeHeader:
    """What a NIfTI header says, before any voxel is read.

    Attributes
    ----------
    shape : (int, int, int)
        Spatial shape after reorientation to RAS (the last entry is the number of axial slices).
    file_shape : tuple of int
        Shape as stored in the file.
    orientation : str
        Axis codes of the file, e.g. ``"LPS"``.
    """

    shape: tuple[int, int, int]
    file_shape: tuple[int, ...]
    orientation: str


@dataclass
class PreviewData:
    """The pieces of the paper's Figure 1 for one subject (small float arrays in [0, 1])."""

    sagittal: np.ndarray        # [Z, Y] mid-sagittal plane, row 0 inferior
    sagittal_aspect: float      # dz / dy, for display
    slice_range: tuple[int, int]
    slice_index: int
    axial: np.ndarray           # [inplane, inplane] resampled axial slice
    patch_box: tuple[int, int, int]  # top, left, side in ``axial`` pixels
    patch: np.ndarray           # [patch, patch]
    resized: np.ndarray         # [size, size]


@dataclass
class VolumeResult:
    """The images of one volume and how they were made.

    Attributes
    ----------
    images : np.ndarray
        uint8 [n, size, size].
    slices, patches : np.ndarray
        int64 [n]: the axial slice and the patch number of each image.
    slice_range : (int, int)
        The axial range actually kept.
    skipped_slices : list of int
        Slices in range where every patch was background only.
    n_skipped_patches : int
    sha256 : str
        Of the input file.
    header : VolumeHeader
    zooms : (float, float, float)
        Voxel size in mm after reorientation.
    preview : PreviewData or None
    """

    images: np.ndarray
    slices: np.ndarray
    patches: np.ndarray
    slice_range: tuple[int, int]
    skipped_slices: list[int]
    n_skipped_patches: int
    sha256: str
    header: VolumeHeader
    zooms: tuple[float, float, float]
    preview: PreviewData | None = field(default=None, repr=False)


# --- reading and checking ---------------------------------------------------------------

def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line (library messages may span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _load_image(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(path)
    except (nib.filebasedimages.ImageFileError, *_READ_ERRORS) as exc:
        raise InputError(f"{path}: not a readable NIfTI file ({describe_error(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: a {type(img).__name__} file, not NIfTI; convert it to .nii/.nii.gz")
    return img


def _spatial_shape(path: Path, file_shape: tuple[int, ...], volume_index: int | None) -> tuple[int, ...]:
    """The 3D shape that will be read, after checking dimensionality and ``volume_index``."""
    shape = tuple(int(n) for n in file_shape)
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume
        shape = shape[:-1]
    if not 3 <= len(shape) <= 4:
        raise InputError(f"{path}: a {len(shape)}D image of shape {file_shape}; prepare needs a 3D volume")
    if len(shape) == 4:
        n = shape[3]
        if volume_index is None:
            raise InputError(f"{path}: a 4D image with {n} volumes (shape {file_shape}); "
                             f"pass --volume-index K (0..{n - 1}) to pick one")
        if not 0 <= volume_index < n:
            raise InputError(f"{path}: --volume-index {volume_index} is out of range; this file has {n} volumes "
                             f"(0..{n - 1})")
    if min(shape[:3]) < 1:
        raise InputError(f"{path}: empty image (shape {file_shape})")
    return shape


def read_header(path: str | Path, volume_index: int | None = None) -> VolumeHeader:
    """Check a volume from its header alone (cheap: no voxel data is read).

    Raises
    ------
    InputError
        Unreadable or non-NIfTI file, 2D or >4D image, 4D without a valid
        ``volume_index``, or a size over :data:`MAX_VOLUME_BYTES` as float32.
    """
    path = Path(path)
    return _check_header(_load_image(path), path, volume_index)


def _check_header(img, path: Path, volume_index: int | None) -> VolumeHeader:
    import nibabel as nib

    file_shape = tuple(int(n) for n in img.shape)
    shape = _spatial_shape(path, file_shape, volume_index)
    n_bytes = int(np.prod(shape[:3], dtype=np.float64)) * 4
    if n_bytes > MAX_VOLUME_BYTES:
        raise InputError(f"{path}: header shape {file_shape} would need {n_bytes / 1024**3:.1f} GiB as float32 "
                         f"(limit {MAX_VOLUME_BYTES / 1024**3:.0f} GiB); the header is corrupt or the scan too large")
    try:
        ornt = nib.io_orientation(img.affine)
        codes = "".join(str(c) for c in nib.aff2axcodes(img.affine))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise InputError(f"{path}: the header's affine is invalid ({describe_error(exc)})") from None
    canonical = [0, 0, 0]
    for axis, (out_axis, _flip) in enumerate(ornt):
        canonical[int(out_axis)] = shape[axis]
    return VolumeHeader(shape=tuple(canonical), file_shape=file_shape, orientation=codes)


def load_canonical(
    path: str | Path, volume_index: int | None = None
) -> tuple[np.ndarray, tuple[float, float, float], VolumeHeader]:
    """Read one volume, reoriented to RAS.

    Returns
    -------
    data : np.ndarray
        float32 [X, Y, Z]: axis 0 left->right, 1 posterior->anterior, 2 inferior->superior.
    zooms : (float, float, float)
        Voxel size in mm along those axes (1.0 where the header gives none).
    header : VolumeHeader

    Raises
    ------
    InputError
        Everything :func:`read_header` refuses, truncated or corrupt voxel data, NaN/Inf
        voxels, and constant (e.g. all-zero) volumes.
    """
    import nibabel as nib

    path = Path(path)
    img = _load_image(path)
    header = _check_header(img, path, volume_index)  # the size limit, before any voxel is read
    try:
        if len(_spatial_shape(path, header.file_shape, volume_index)) == 4:
            img = img.slicer[:, :, :, volume_index]
        canonical = nib.as_closest_canonical(img)
        data = np.asarray(canonical.get_fdata(dtype=np.float32), dtype=np.float32)
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read the voxel data ({describe_error(exc)}); "
                         "the file is truncated or corrupt") from None
    data = data.reshape(data.shape[:3])  # [X, Y, Z]; drops trailing length-1 axes
    zooms = tuple(float(z) if np.isfinite(z) and z > 0 else 1.0
                  for z in nib.affines.voxel_sizes(canonical.affine)[:3])
    check_voxels(data, path)
    return data, zooms, header


def check_voxels(data: np.ndarray, path: Path) -> None:
    """Refuse NaN/Inf voxels and constant volumes (nothing to normalise)."""
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        raise InputError(f"{path}: {n_bad} NaN/Inf voxels; replace them (e.g. with 0) before preparing")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        what = "empty (every voxel is 0)" if lo == 0 else f"constant (every voxel is {lo:g})"
        raise InputError(f"{path}: the volume is {what}; check the file")


# --- intensities and slice range --------------------------------------------------------

def brain_mask(data: np.ndarray) -> np.ndarray:
    """bool [X, Y, Z]: voxels above the background level (see :data:`BACKGROUND_LEVEL`)."""
    lo = float(data.min())
    # The top of the range is only a threshold estimate: every 2nd voxel per axis (1/8 of the
    # volume) gives it at an eighth of the sorting cost and memory.
    top = float(np.percentile(data[::2, ::2, ::2], 99.9))
    if top <= lo:  # a tiny brain in a huge field of view
        top = float(data.max())
    return data > lo + BACKGROUND_LEVEL * (top - lo)


def normalise_intensity(data: np.ndarray, mask: np.ndarray, path: Path) -> np.ndarray:
    """Map the brain's 0.5th..99.5th intensity percentiles to 0..1, clipping, IN PLACE.

    Parameters
    ----------
    data : np.ndarray
        float32 [X, Y, Z]; overwritten (one volume-sized copy fewer at peak memory).
    mask : np.ndarray
        bool [X, Y, Z] brain voxels.
    path : Path
        For the error message.
    """
    lo, hi = np.percentile(data[mask], NORMALISE_PERCENTILES)
    if hi <= lo:
        raise InputError(f"{path}: no intensity contrast inside the brain (percentiles {lo:g}..{hi:g}); check the file")
    data -= np.float32(lo)
    data *= np.float32(1.0 / (hi - lo))
    return np.clip(data, 0.0, 1.0, out=data)


def brain_extent(mask: np.ndarray) -> tuple[int, int]:
    """First and last axial slice containing brain."""
    rows = np.flatnonzero(mask.any(axis=(0, 1)))
    return int(rows[0]), int(rows[-1])


def axial_range(mask: np.ndarray, spec: SliceSpec, path: Path) -> tuple[int, int]:
    """The kept slices A..B (inclusive) for this volume.

    Raises
    ------
    InputError
        When an absolute range reaches past the volume's last slice.
    """
    n_slices = mask.shape[2]
    if spec.relative_slices is not None:
        first, last = brain_extent(mask)
        fa, fb = spec.relative_slices
        span = last - first
        return first + int(round(fa * span)), first + int(round(fb * span))
    check_slice_range(n_slices, spec.slices, path)
    return spec.slices


def check_slice_range(n_slices: int, slices: tuple[int, int], path: Path) -> None:
    """Raise :class:`InputError` when ``slices`` does not fit ``n_slices`` axial slices."""
    a, b = slices
    if b >= n_slices:
        raise InputError(f"{path}: has {n_slices} axial slices (0..{n_slices - 1}) but --slices {a}:{b} needs "
                         f"{b + 1}; pass a smaller --slices or --relative-slices 0.1:0.9 (fractions of the brain)")


# --- 2D geometry ------------------------------------------------------------------------

def axial_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """[Y, X] view of axial slice ``z`` of a RAS volume: row 0 anterior, column 0 left."""
    return np.ascontiguousarray(volume[:, ::-1, z].T)


def pad_to_square_fov(image: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Zero-pad [H, W] so that its physical height equals its width (centred)."""
    h, w = image.shape
    side_mm = max(h * row_mm, w * col_mm)
    target_h, target_w = max(h, round(side_mm / row_mm)), max(w, round(side_mm / col_mm))
    top, left = (target_h - h) // 2, (target_w - w) // 2
    out = np.zeros((target_h, target_w), dtype=image.dtype)
    out[top:top + h, left:left + w] = image
    return out


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float [H, W] image; PIL widens the kernel when shrinking (antialiasing)."""
    from PIL import Image

    if image.shape == (height, width):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode "F"
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def patch_starts(length: int, patch: int, stride: int | None) -> list[int]:
    """Start offsets of patches along one axis; negative when the image is smaller (padding).

    One centred patch without a stride; with one, every ``stride`` pixels plus a last patch
    flush with the far edge, so the whole slice is covered.
    """
    if stride is None or length <= patch:
        return [(length - patch) // 2]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def cut_patch(image: np.ndarray, top: int, left: int, patch: int) -> np.ndarray:
    """[patch, patch] window of ``image`` at (top, left); parts outside the image are 0."""
    out = np.zeros((patch, patch), dtype=image.dtype)
    h, w = image.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + patch, h), min(left + patch, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = image[r0:r1, c0:c1]
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 0..255 (rounded)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --- the whole volume -------------------------------------------------------------------

def _inplane_views(volume: np.ndarray, mask: np.ndarray, z: int, zooms, inplane: int):
    """The resampled axial slice and its brain fraction map, both float32 [S, S]."""
    image, brain = axial_slice(volume, z), axial_slice(mask, z).astype(np.float32)
    if inplane == 0:
        return image, brain
    row_mm, col_mm = zooms[1], zooms[0]
    image = resize(pad_to_square_fov(image, row_mm, col_mm), inplane, inplane)
    brain = resize(pad_to_square_fov(brain, row_mm, col_mm), inplane, inplane)
    return image, brain


def process_volume(path: str | Path, spec: SliceSpec, *, with_preview: bool = False) -> VolumeResult:
    """Turn one volume into its images (runs in a worker process).

    Parameters
    ----------
    path : path
        A 3D (or 4D with ``spec.volume_index``) NIfTI file.
    spec : SliceSpec
    with_preview : bool
        Also return the pieces of the preview figure.

    Raises
    ------
    InputError
        Naming ``path``, for any unusable file.
    """
    path = Path(path)
    data, zooms, header = load_canonical(path, spec.volume_index)  # [X, Y, Z]
    mask = brain_mask(data)
    volume = normalise_intensity(data, mask, path)  # in place: ``data`` is now ``volume``
    a, b = axial_range(mask, spec, path)

    images, slices, patches, skipped = [], [], [], []
    n_skipped_patches = 0
    preview = None
    preview_z = (a + b) // 2
    for z in range(a, b + 1):
        image, brain = _inplane_views(volume, mask, z, zooms, spec.inplane)  # [S, S]
        kept = 0
        tops = patch_starts(image.shape[0], spec.patch, spec.patch_stride)
        lefts = patch_starts(image.shape[1], spec.patch, spec.patch_stride)
        for number, (top, left) in enumerate((t, l) for t in tops for l in lefts):
            if cut_patch(brain, top, left, spec.patch).mean() < MIN_BRAIN_FRACTION:
                n_skipped_patches += 1
                continue
            patch = cut_patch(image, top, left, spec.patch)  # [patch, patch]
            small = resize(patch, spec.size, spec.size)  # [size, size]
            images.append(to_uint8(small))
            slices.append(z)
            patches.append(number)
            kept += 1
            if with_preview and preview is None and z >= preview_z:
                preview = PreviewData(
                    sagittal=np.ascontiguousarray(volume[volume.shape[0] // 2].T),  # [Z, Y]
                    sagittal_aspect=zooms[2] / zooms[1], slice_range=(a, b), slice_index=z,
                    axial=image, patch_box=(top, left, spec.patch), patch=patch, resized=small)
        if kept == 0:
            skipped.append(z)
    size = spec.size
    return VolumeResult(
        images=np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        slices=np.asarray(slices, dtype=np.int64), patches=np.asarray(patches, dtype=np.int64),
        slice_range=(a, b), skipped_slices=skipped, n_skipped_patches=n_skipped_patches,
        sha256=sha256_file(path), header=header, zooms=zooms, preview=preview,
    )
