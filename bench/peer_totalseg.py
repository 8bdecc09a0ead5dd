"""A peer shaped like TotalSegmentator's ``--fast`` model, end to end on one CT (for
``bench/segment_speed.py``): random weights, so only its cost means anything.

read the NIfTI -> resample to 3 mm (trilinear) -> clip and z-score -> a 3D nnU-Net-like
network (MONAI DynUNet: 6 levels, 32-320 features, instance norm, leaky ReLU, 118 outputs)
by sliding window (patch 128^3, overlap 0.5, Gaussian blending) -> argmax -> labels back to
the input grid (nearest) -> write the label map (.nii.gz).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

SPACING_MM = 3.0
PATCH = (128, 128, 128)
FILTERS = (32, 64, 128, 256, 320, 320)
OUTPUTS = 118


def build_peer():
    from monai.networks.nets import DynUNet

    return DynUNet(spatial_dims=3, in_channels=1, out_channels=OUTPUTS, kernel_size=[3] * 6,
                   strides=[1, 2, 2, 2, 2, 2], upsample_kernel_size=[2] * 5, filters=list(FILTERS),
                   norm_name=("INSTANCE", {"affine": True})).eval()


def peer_end_to_end(path: str, out_path: str) -> dict:
    """Seconds per stage and the process's peak RSS for one CT."""
    import nibabel as nib
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = build_peer()
    t0 = time.perf_counter()
    image = nib.load(path)
    ct = np.asarray(image.dataobj, dtype=np.float32)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    t_read = time.perf_counter()
    size = [max(1, round(n * s / SPACING_MM)) for n, s in zip(ct.shape, spacing, strict=True)]
    x = F.interpolate(torch.from_numpy(ct)[None, None], size=size, mode="trilinear", align_corners=False)
    x = x.clamp(-1024, 1500)
    x = (x - x.mean()) / x.std().clamp_min(1e-6)
    t_pre = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(x, PATCH, 1, net, overlap=0.5, mode="gaussian")
        labels = logits.argmax(1, keepdim=True).to(torch.uint8)
    del logits
    t_net = time.perf_counter()
    back = F.interpolate(labels.float(), size=list(ct.shape), mode="nearest")[0, 0].to(torch.uint8).numpy()
    t_post = time.perf_counter()
    nib.save(nib.Nifti1Image(back, image.affine), out_path)
    t_end = time.perf_counter()
    return {"read_s": t_read - t0, "preprocess_s": t_pre - t_read, "model_s": t_net - t_pre,
            "postprocess_s": t_post - t_net, "write_s": t_end - t_post, "total_s": t_end - t0,
            "grid": tuple(size), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def describe(r: dict) -> str:
    stages = ", ".join(f"{k} {r[f'{k}_s']:.2f}" for k in ("read", "preprocess", "model", "postprocess", "write"))
    return f"{r['total_s']:.2f} s end to end on a {r['grid']} 3 mm grid, peak RSS {r['peak_rss_mb']:.0f} MB; {stages}"


if __name__ == "__main__":
    import sys

    print(describe(peer_end_to_end(sys.argv[1], str(Path(sys.argv[2])))))
