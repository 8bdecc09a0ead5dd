"""``spineseg segment`` end to end, and the bad inputs of the core issue: each exits 2 with one
line naming the file, no traceback, and nothing written."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.cli.main import main
from tests.conftest import make_phantom
from tests.imaging.test_dicom import write_series


def _phantom_nifti(path: Path) -> Path:
    volume, _ = make_phantom(shape=(40, 36, 8))
    nib.save(nib.Nifti1Image(volume.array.astype(np.int16), volume.affine), str(path))
    return path


def test_single_input_writes_mask_summary_and_overlays(tmp_path: Path, tiny_model: Path, capsys) -> None:
    ct = _phantom_nifti(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    code = main(["segment", str(ct), "-o", str(out / "mask.nii.gz"), "--model", str(tiny_model),
                 "--summary", str(out / "summary.json"), "--overlays", str(out / "overlays")])
    assert code == 0
    mask = nib.load(str(out / "mask.nii.gz"))
    np.testing.assert_allclose(mask.affine, nib.load(str(ct)).affine)
    assert mask.shape == (40, 36, 8) and mask.get_data_dtype() == np.uint8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_id"] == "tiny-untrained" and summary["shape"] == [40, 36, 8]
    assert set(summary["timings_s"]) >= {"model", "total"}
    assert list((out / "overlays").glob("slice_*.png"))
    assert "tiny-untrained" in capsys.readouterr().out


def test_many_inputs_go_to_one_folder_each(tmp_path: Path, tiny_model: Path) -> None:
    a = _phantom_nifti(tmp_path / "a.nii.gz")
    b = _phantom_nifti(tmp_path / "b.nii.gz")
    assert main(["segment", str(a), str(b), "--output-dir", str(tmp_path / "out"), "--model", str(tiny_model)]) == 0
    for name in ("a", "b"):
        assert (tmp_path / "out" / name / "mask.nii.gz").exists()
        assert (tmp_path / "out" / name / "summary.json").exists()


def _empty(tmp: Path) -> Path:
    (tmp / "empty.nii.gz").touch()
    return tmp / "empty.nii.gz"


def _truncated(tmp: Path) -> Path:
    full = _phantom_nifti(tmp / "full.nii.gz")
    (tmp / "truncated.nii.gz").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return tmp / "truncated.nii.gz"


def _text_as_dcm(tmp: Path) -> Path:
    (tmp / "scan.dcm").write_text("this is a text file, not DICOM\n")
    return tmp / "scan.dcm"


def _two_series(tmp: Path) -> Path:
    write_series(tmp / "study" / "a", [0.0, 2.0, 4.0], series_uid="1.2.3.1")
    write_series(tmp / "study" / "b", [0.0, 2.0, 4.0], series_uid="1.2.3.2")
    return tmp / "study"


def _mr(tmp: Path) -> Path:
    write_series(tmp / "mr", [0.0, 2.0, 4.0], modality="MR")
    return tmp / "mr"


def _nan(tmp: Path) -> Path:
    array = np.zeros((8, 8, 4), dtype=np.float32)
    array[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp / "nan.nii.gz"))
    return tmp / "nan.nii.gz"


def _four_d(tmp: Path) -> Path:
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), dtype=np.int16), np.eye(4)), str(tmp / "fmri.nii.gz"))
    return tmp / "fmri.nii.gz"


def _zip_slip(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "evil.zip", "w") as archive:
        archive.writestr("../../x", b"escaped")
    return tmp / "evil.zip"


def _huge_header(tmp: Path) -> Path:
    header = nib.Nifti2Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((100000, 100000, 100000))
    path = tmp / "huge.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 68)
    return path


BAD_INPUTS = {
    "empty file": (_empty, "empty"),
    "truncated nii.gz": (_truncated, "truncated"),
    "text renamed .dcm": (_text_as_dcm, "DICOM"),
    "two series": (_two_series, "--series-uid"),
    "MR series": (_mr, "MR is not CT"),
    "NaN voxels": (_nan, "NaN"),
    "4D NIfTI": (_four_d, "4D"),
    "zip slip": (_zip_slip, "../../x"),
    "huge header": (_huge_header, "100000x100000x100000"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, tiny_model: Path, capsys, case) -> None:
    make, expected = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = make(inputs)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", str(path), "-o", str(out / "mask.nii.gz"), "--model", str(tiny_model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert path.name in err[0] or str(path) in err[0]
    assert "Traceback" not in err[0]
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "tiny-model"]


def test_mask_that_does_not_overlap_the_ct_is_refused(tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), dtype=np.uint8), np.eye(4)), str(pred))
    far = np.eye(4)
    far[:3, 3] = 10000
    truth = tmp_path / "truth.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), dtype=np.uint8), far), str(truth))
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 2
    err = capsys.readouterr().err.strip()
    assert "truth.nii.gz" in err and "does not overlap" in err


def test_missing_output_argument_is_a_clear_error(tmp_path: Path, capsys) -> None:
    ct = _phantom_nifti(tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct)]) == 2
    assert "--output" in capsys.readouterr().err


def test_segment_imports_no_web_database_queue_or_monai(tmp_path: Path, tiny_model: Path) -> None:
    import subprocess
    import sys

    ct = _phantom_nifti(tmp_path / "ct.nii.gz")
    script = (
        "import sys\n"
        "from spineseg.cli.main import main\n"
        f"code = main(['segment', {str(ct)!r}, '-o', {str(tmp_path / 'm.nii.gz')!r}, '--model', {str(tiny_model)!r},"
        f" '--summary', {str(tmp_path / 's.json')!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'sqlalchemy', 'fastapi', 'huey',"
        " 'alembic', 'uvicorn') or m.startswith(('spineseg.web', 'spineseg.store', 'spineseg.jobs')))\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["inference"]["dtype"] in ("float32", "bfloat16", "float16") and summary["inference"]["reason"]
    # The quality checks run for a --summary, and their time is a stage of the command.
    assert set(summary["cli_timings_s"]) == {"read", "write_mask", "quality"}


def test_the_console_script_ends_segment_without_teardown_and_loses_nothing(tmp_path: Path, tiny_model: Path) -> None:
    """``python -m spineseg.cli.main segment`` (what the ``spineseg`` script runs) leaves its
    process through ``os._exit``: the mask, the summary, stdout and the log still arrive whole,
    and the exit codes are ``main``'s."""
    import subprocess
    import sys

    ct = _phantom_nifti(tmp_path / "ct.nii.gz")
    run = [sys.executable, "-m", "spineseg.cli.main", "segment"]
    done = subprocess.run([*run, str(ct), "-o", str(tmp_path / "m.nii.gz"), "--model", str(tiny_model),
                           "--summary", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"-> {tmp_path / 'm.nii.gz'}")
    assert "segmented ct.nii.gz with tiny-untrained" in done.stderr  # the log, flushed
    assert nib.load(str(tmp_path / "m.nii.gz")).get_fdata().shape == (40, 36, 8)
    assert json.loads((tmp_path / "s.json").read_text())["model_id"] == "tiny-untrained"

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    refused = subprocess.run([*run, str(bad), "-o", str(tmp_path / "b.nii.gz"), "--model", str(tiny_model)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "b.nii.gz").exists()


_REFAULT_SCRIPT = """
import resource, sys
import numpy as np
from spineseg.cli.main import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
block = np.ones(96 << 18, dtype=np.float32)  # 96 MB, touched
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(96 << 18, dtype=np.float32)  # the same size again
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_short_commands_reuse_the_memory_they_free_instead_of_faulting_in_new_pages() -> None:
    import subprocess
    import sys

    def refaults(mode: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", _REFAULT_SCRIPT, mode], capture_output=True, text=True,
                              check=True, timeout=60)
        kept, faults = done.stdout.split()
        return kept, int(faults)

    (kept, with_keep), (_, default) = refaults("keep"), refaults("default")
    assert kept == "True"
    assert with_keep < default / 2, (with_keep, default)  # default glibc maps a fresh 96 MB block
