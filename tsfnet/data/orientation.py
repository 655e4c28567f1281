"""Voxel order: bring a volume to RAS order (nibabel's closest canonical) and back.

The same image can be stored with its axes flipped or permuted (LAS, LPS, ...) and
a matching affine. The network must not care, so it sees every case in RAS voxel
order; outputs go back to the stored order. Only axis flips and permutations are
undone: the affine's residual rotation, if any, is kept.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes, apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tsfnet.data.volume_io import Geometry

IDENTITY = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


def orientation_codes(geometry: Geometry) -> str:
    """E.g. 'RAS' or 'LPS': where each voxel axis points, as in nibabel and ITK-SNAP."""
    return "".join(aff2axcodes(geometry.affine))


def canonical_geometry(geometry: Geometry) -> Geometry:
    """The grid of `geometry` with its voxel axes reordered and flipped to RAS."""
    ornt = io_orientation(geometry.affine)
    shape = [0, 0, 0]
    for size, (axis, _) in zip(geometry.shape, ornt, strict=True):
        shape[int(axis)] = size
    return Geometry(tuple(shape), geometry.affine @ inv_ornt_aff(ornt, geometry.shape))


def to_canonical(data: np.ndarray, geometry: Geometry) -> np.ndarray:
    """`data`, stored on `geometry`, in RAS voxel order."""
    _check_shape(data, geometry.shape)
    return _apply(data, io_orientation(geometry.affine))


def from_canonical(data: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of `to_canonical`: `data` in RAS voxel order back to `geometry`'s stored order."""
    _check_shape(data, canonical_geometry(geometry).shape)
    return _apply(data, ornt_transform(IDENTITY, io_orientation(geometry.affine)))


def reorient(data: np.ndarray, source: Geometry, target: Geometry) -> np.ndarray:
    """`data` stored on `source` in the voxel order of `target` (an equivalent grid), in one step."""
    _check_shape(data, source.shape)
    return _apply(data, ornt_transform(io_orientation(source.affine), io_orientation(target.affine)))


def _apply(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    if np.array_equal(ornt, IDENTITY):
        return data
    # A flipped or transposed view; copied Fortran-ordered like nibabel's arrays, which
    # downstream code reads fastest (and torch refuses negative strides).
    return np.asfortranarray(apply_orientation(data, ornt))


def _check_shape(data: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"array shape {data.shape} does not match geometry {shape}")
