"""One file holding a case's named arrays: a zip archive (stored, not deflated) whose
members `<name>.b2` are blosc2 frames.

Why not `.npz`: deflating four float32 volumes costs about a second of one core per
BraTS-sized case, more than everything else preprocessing does; blosc2's zstd with
byte shuffling compresses these arrays smaller and seven times faster. Any member can
be read back with `blosc2.unpack_tensor(zipfile.ZipFile(path).read(member))`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import blosc2
import numpy as np

SUFFIX = ".b2zip"
MEMBER_SUFFIX = ".b2"
COMPRESSION = {
    "codec": blosc2.Codec.ZSTD,
    "clevel": 1,
    "filters": [blosc2.Filter.SHUFFLE],
    "filters_meta": [0],
    "nthreads": 1,  # preprocessing already runs one case per core
}


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            frame = blosc2.pack_tensor(np.ascontiguousarray(array), cparams=COMPRESSION)
            archive.writestr(name + MEMBER_SUFFIX, frame)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of the file; OSError when it cannot be read, ValueError when it is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                member.removesuffix(MEMBER_SUFFIX): blosc2.unpack_tensor(archive.read(member))
                for member in archive.namelist()
                if member.endswith(MEMBER_SUFFIX)
            }
    except (zipfile.BadZipFile, RuntimeError) as exc:  # zip's and blosc2's words for damage
        raise ValueError(f"damaged array file: {exc}") from exc
