"""The spine's surface as a triangle mesh in world millimetres, written as binary STL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes

from spineseg.errors import InputError

STL_HEADER = b"SpineSeg spine surface, RAS+ millimetres".ljust(80, b" ")
STL_TRIANGLE = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])


def mask_surface(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a binary mask (I, J, K) at level 0.5, vertices mapped through
    ``affine`` (voxel -> RAS+ mm). Returns vertices (V, 3) float64 in mm and triangles (T, 3)
    int indices, wound so normals point out of the spine whatever the affine's handedness.
    Raises ``InputError`` when the mask holds no voxel."""
    binary = np.asarray(mask) > 0
    box = ndimage.find_objects(binary.view(np.uint8))
    if not box or box[0] is None:
        raise InputError("mask", "the mask is empty: no spine was found, so there is no surface to mesh")
    # Only the mask's bounding box is meshed (the same triangles: outside it nothing crosses
    # 0.5), padded so the surface closes where the spine touches the box.
    padded = np.pad(binary[box[0]].astype(np.float32), 1)
    verts, faces, _normals, _values = marching_cubes(padded, level=0.5)
    verts += np.array([b.start for b in box[0]], dtype=verts.dtype) - 1.0  # back to the grid's voxels
    world = verts @ affine[:3, :3].T + affine[:3, 3]
    # scikit-image winds triangles towards increasing values (into the spine); reverse them for
    # outward normals, unless a mirroring affine (negative determinant) already reversed them.
    if np.linalg.det(affine[:3, :3]) > 0:
        faces = faces[:, ::-1]
    return world, faces


def triangle_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (T, 3) of each triangle by the right-hand rule (zero for degenerate ones)."""
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)


def write_binary_stl(vertices: np.ndarray, faces: np.ndarray, path: Path) -> Path:
    """Binary STL: 80-byte header, uint32 triangle count, then per triangle 12 float32
    (normal, three vertices) and a uint16 attribute, little-endian."""
    records = np.zeros(len(faces), dtype=STL_TRIANGLE)
    records["normal"] = triangle_normals(vertices, faces)
    records["vertices"] = vertices[faces]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".part-" + path.name)
    with tmp.open("wb") as handle:
        handle.write(STL_HEADER)
        handle.write(np.uint32(len(faces)).tobytes())
        handle.write(records.tobytes())
    tmp.replace(path)
    return path


def write_mask_stl(mask: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """The surface of ``mask`` as a binary STL in world mm; see ``mask_surface``."""
    vertices, faces = mask_surface(mask, affine)
    return write_binary_stl(vertices, faces, path)
