"""Reorient volumes to the orientation a run was trained in (rule R20, ``data.orientation``).

A volume's array axes point where its geometry says (NIfTI's i, j, k; a DICOM series' slice,
row, column). Two scans of one anatomy can store it transposed or mirrored, and a network
that saw one way during training sees the other as different anatomy. MONAI pipelines put
``Orientationd`` first for this; here the axis permutation and flips come from nibabel's
orientation functions, and predictions go back to the input's own grid with the inverse.

Torch-free (the edge runtime imports it); volumes whose orientation is unknown (no geometry,
e.g. MedMNIST 3D) and 2D images are left as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from meddx.io.base import ImageData, axcodes_of


def valid_axcodes(codes) -> tuple[str, ...]:
    """``codes`` as a tuple of three RAS letters, one of L/R, A/P and S/I each; ValueError otherwise."""
    t = tuple(str(c).upper() for c in codes)
    pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
    if len(t) != 3 or sorted(next((i for i, p in enumerate(pairs) if c in p), -1) for c in t) != [0, 1, 2]:
        got = "".join(map(str, codes))
        raise ValueError(f"must be three letters, one of L/R, A/P and S/I each (e.g. RAS), got {got!r}")
    return t


@dataclasses.dataclass(frozen=True)
class Reorientation:
    """The axis permutation and flips from a volume's orientation to a target one.

    ``ornt`` is nibabel's: row i sends input axis i to output axis ``ornt[i, 0]``, flipped
    when ``ornt[i, 1]`` is -1. Arrays are reoriented on their last three axes (channels or
    classes in front stay)."""

    ornt: np.ndarray
    source: tuple[str, ...]
    target: tuple[str, ...]

    def forward(self, a: np.ndarray) -> np.ndarray:
        return self._apply(a, self.ornt)

    def back(self, a: np.ndarray) -> np.ndarray:
        return self._apply(a, _ornt(self.target, self.source))

    @staticmethod
    def _apply(a: np.ndarray, ornt: np.ndarray) -> np.ndarray:
        from nibabel.orientations import apply_orientation

        lead = a.ndim - 3
        moved = np.moveaxis(a, list(range(lead)), list(range(3, a.ndim))) if lead else a
        out = apply_orientation(moved, ornt)  # the first three axes; the moved ones ride along
        return np.ascontiguousarray(np.moveaxis(out, list(range(3, a.ndim)), list(range(lead))) if lead else out)

    def image(self, img: ImageData) -> ImageData:
        """``img`` with its array, spacing and affine reoriented (the affine stays in its own world
        frame: LPS for DICOM, RAS for NIfTI)."""
        from nibabel.orientations import inv_ornt_aff

        meta = dict(img.meta)
        meta.pop("shape", None)  # the input file's own shape, used when writing outputs in its geometry
        if meta.get("affine") is not None:
            meta["affine"] = (np.asarray(meta["affine"], float) @ inv_ornt_aff(self.ornt, img.spatial_shape)).tolist()
        # named, not recomputed from the new affine: for a DICOM series at exactly 45 degrees nibabel's
        # tie-break could read another orientation, and the next call would turn it once more
        meta["axcodes"] = list(self.target)
        spacing = None
        if img.spacing is not None and len(img.spacing) == 3:
            spacing = tuple(float(v) for v in _permuted(img.spacing, self.ornt))
        return ImageData(array=self.forward(img.array), spacing=spacing, meta=meta)

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The reoriented spatial shape of a volume of spatial ``shape``."""
        return tuple(int(v) for v in _permuted(shape, self.ornt))


def _ornt(source, target) -> np.ndarray:
    """nibabel's transform from orientation ``source`` to ``target`` (ValueError for degenerate codes)."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    return ornt_transform(axcodes2ornt(tuple(source)), axcodes2ornt(tuple(target)))


def _permuted(values, ornt: np.ndarray) -> list:
    """Per-axis ``values`` (a shape, a spacing) in the axis order ``ornt`` leads to."""
    out = [values[0]] * 3
    for i, (ax, _) in enumerate(ornt):
        out[int(ax)] = values[i]
    return out


def per_axis_in(values: tuple, source, target) -> tuple:
    """Per-axis ``values`` of a volume in orientation ``source`` along the axes of orientation ``target``
    (the fingerprint measures shapes and spacings as R20 will train them); as they are where either
    orientation is unknown."""
    if not source or not target or tuple(source) == tuple(target) or len(values) != 3:
        return values
    return tuple(_permuted(values, _ornt(source, target)))


def reorientation(img: ImageData, codes) -> Reorientation | None:
    """What turns ``img`` to orientation ``codes``; None when nothing needs doing: no target, a 2D
    image, a volume whose orientation is unknown, or one already in ``codes``."""
    if not codes or img.spatial_dims != 3:
        return None
    source = axcodes_of(img)
    target = tuple(codes)
    if not source or len(source) != 3 or None in source or source == target:
        return None
    try:
        ornt = _ornt(source, target)
    except ValueError:  # degenerate geometry (two axes along one direction): orientation unknown
        return None
    return Reorientation(ornt=ornt, source=tuple(source), target=target)


def turned(img: ImageData, codes) -> tuple[ImageData, Reorientation | None]:
    """``img`` in orientation ``codes`` (itself when nothing needs doing) and what turned it, so that
    a caller can turn a mask the same way or outputs back (None when nothing was done)."""
    ro = reorientation(img, codes)
    return (ro.image(img), ro) if ro else (img, None)


def oriented(img: ImageData, codes) -> ImageData:
    """``img`` in orientation ``codes`` (itself when nothing needs doing)."""
    return turned(img, codes)[0]
