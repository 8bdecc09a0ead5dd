"""Reading, writing, resampling and de-identifying scans (knows nothing of models or the web)."""

import sys


def _import_nibabel_without_pydicom() -> None:
    """Import nibabel with pydicom kept out of its own import.

    nibabel imports pydicom as it loads (0.22 s of the command line's 0.6 s start-up on a
    2-core CPU) only to parse the DICOM headers some converters store in NIfTI extensions
    (ecode 2). We never read those: nibabel then keeps them as plain bytes, which it loads and
    writes back unchanged. pydicom still imports as usual where our DICOM code asks for it.
    """
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # `import pydicom` fails inside nibabel
    try:
        import nibabel  # noqa: F401
    finally:
        del sys.modules["pydicom"]


_import_nibabel_without_pydicom()
