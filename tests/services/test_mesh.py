"""STL surface of a mask: binary layout, world coordinates through the affine, outward normals."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.services.mesh import mask_surface, write_mask_stl


def _cube(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[3:9, 3:9, 3:9] = 1
    return mask, affine


def test_binary_stl_layout_and_world_extent(tmp_path: Path) -> None:
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 100.0]
    mask, _ = _cube(affine)
    path = write_mask_stl(mask, affine, tmp_path / "cube.stl")
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 80)
    assert len(data) == 84 + 50 * count and count > 0
    records = np.frombuffer(data[84:], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    vertices = records["v"].reshape(-1, 3)
    # Voxels 3..8 with the 0.5 iso-level: the surface spans 2.5..8.5 in index space.
    np.testing.assert_allclose(vertices.min(axis=0), [10 + 2 * 2.5, -5 + 2.5, 100 + 3 * 2.5], atol=1e-4)
    np.testing.assert_allclose(vertices.max(axis=0), [10 + 2 * 8.5, -5 + 8.5, 100 + 3 * 8.5], atol=1e-4)


@pytest.mark.parametrize("flip", [False, True])
def test_normals_point_outwards_for_both_handednesses(flip: bool) -> None:
    affine = np.diag([-1.0 if flip else 1.0, 1.0, 1.0, 1.0])
    mask, _ = _cube(affine)
    vertices, faces = mask_surface(mask, affine)
    centre = vertices.mean(axis=0)
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    normals = np.cross(b - a, c - a)
    outward = np.einsum("ij,ij->i", normals, (a + b + c) / 3 - centre)
    assert (outward > 0).mean() > 0.99


def test_empty_mask_is_refused() -> None:
    with pytest.raises(InputError, match="empty"):
        mask_surface(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))
