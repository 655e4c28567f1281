"""Read and write 3D volumes with their geometry.

NIfTI goes through nibabel (the affine is kept as is); other formats (.nrrd, .mha,
.mhd, .nhdr) through SimpleITK, whose LPS geometry is converted to a RAS affine.
Arrays are always in the file's voxel order, shape (X, Y, Z).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tsfnet.atomic import atomic_path
from tsfnet.errors import InputError

NIFTI_ENDINGS = (".nii.gz", ".nii")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, int, int]
    affine: np.ndarray  # 4x4, voxel index -> RAS mm

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def matches(self, other: Geometry, tol: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=tol)

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Geometry:
        return cls(tuple(int(v) for v in data["shape"]), np.asarray(data["affine"], dtype=float))


def is_nifti(path: Path) -> bool:
    return str(path).endswith(NIFTI_ENDINGS)


def read_volume(path: Path) -> tuple[np.ndarray, Geometry]:
    """Load one 3D volume as float32; reject 4D data, NaN/inf and unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        if is_nifti(path):
            image = nib.load(str(path))
            data = np.asarray(image.dataobj, dtype=np.float32)
            affine = np.asarray(image.affine, dtype=float)
        else:
            data, affine = _read_with_simpleitk(path)
    except InputError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot read volume ({reason})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise InputError(path, f"contains {n_bad} NaN/inf voxels")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, "affine is degenerate (a voxel axis of zero length, or two parallel axes)")
    return data, Geometry(tuple(int(s) for s in data.shape), affine)


def _read_with_simpleitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3:
        raise InputError(path, f"expected a 3D volume, got {image.GetDimension()}D")
    data = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # (z,y,x) -> (x,y,z)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    affine_lps[:3, 3] = image.GetOrigin()
    return data, LPS_TO_RAS @ affine_lps


def write_volume(
    path: Path, data: np.ndarray, geometry: Geometry, overwrite: bool = False, dtype: type = np.float32
) -> Path:
    """Write atomically as NIfTI with the given affine (the input's geometry restored)."""
    path = Path(path)
    if tuple(data.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {data.shape} does not match geometry {geometry.shape}")
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), geometry.affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path, overwrite) as tmp:
        nib.save(image, str(tmp))
    return path
