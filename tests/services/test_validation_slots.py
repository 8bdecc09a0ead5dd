"""Uploads read in full for validation share ``VALIDATION_SLOTS``: eight uploads at once never
hold eight volumes in memory at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nibabel as nib

import spineseg.services.ingest as ingest
from tests.conftest import make_phantom


def test_at_most_the_slot_count_of_volumes_is_read_at_once(tmp_path: Path, monkeypatch) -> None:
    volume, _mask = make_phantom()
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(path))
    real_load = ingest.load_volume
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def counting_load(source):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.2)  # long enough for the other threads to pile up at the slot
            return real_load(source)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(ingest, "load_volume", counting_load)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ingest.check_inputs(path, None).shape))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [volume.shape] * 8
    assert state["most"] == ingest.VALIDATION_SLOTS
