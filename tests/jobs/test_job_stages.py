"""Issue 31 in the segment job: every stage's seconds in the run summary, the exports made after
the result is recorded (the summary lists what is still coming until they are), and a progress
bar that follows the measured stage costs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.jobs.progress_plan import COSTS_FILE, ProgressPlan, learn_costs, load_costs
from spineseg.jobs.segment_job import run_segment_job
from spineseg.registry import Registry
from spineseg.services.run_exports import PENDING_KEY
from spineseg.services.runs import run_files
from spineseg.services.stage_times import INTAKE_FILE, StageTimes, stage_rows
from spineseg.store.database import open_database
from spineseg.store.studies import create_job, create_study, get_job, get_study, new_id
from tests.conftest import make_phantom
from tests.web.web_helpers import make_settings, register_test_model


@pytest.fixture
def setup(tmp_path: Path) -> tuple:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    return settings, open_database(settings.sqlalchemy_url), Registry(settings.registry_dir)


def test_job_records_every_stage_and_makes_the_exports_after_the_result(setup: tuple, tmp_path: Path) -> None:
    settings, database, registry = setup
    volume, mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, volume.affine), str(tmp_path / "truth.nii.gz"))
    with database.session() as session:
        study_id = new_id()
        create_study(session, study_id=study_id, owner_id=None, name="phantom", input_kind="nifti",
                     input_path=str(tmp_path / "ct.nii.gz"), truth_path=str(tmp_path / "truth.nii.gz"))
        job_id = create_job(session, study_id=study_id).id
    (settings.studies_dir / study_id).mkdir(parents=True)
    (settings.studies_dir / study_id / INTAKE_FILE).write_text(json.dumps({"read": 0.25, "store": 0.01}))

    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "done"

    with database.session() as session:
        files = run_files(settings.studies_dir, get_job(session, job_id=job_id))
        stored = get_study(session, study_id=study_id).summary
    on_disk = json.loads(files.summary.read_text())
    assert on_disk == stored  # the database's copy was brought up to date after the exports
    times = on_disk["stage_times_s"]
    assert list(times)[:2] == ["read", "store"]  # the upload's intake first, as it happened
    for stage in ("queue_wait", "load", "segment", "write_ct_mask", "load_truth", "score_overlap", "score_surface",
                  "levels_measurements", "quality", "viewer_copies", "record", "overlays"):
        assert stage in times and times[stage] >= 0, stage
    assert on_disk[PENDING_KEY] == []
    assert list(files.overlays.glob("*.png"))
    if on_disk["spine_volume_ml"] > 0:
        assert "stl" in times and files.mesh.is_file()
    assert "seg" not in times  # a NIfTI input has no series to reference
    # costs learned from this job for the next one's progress estimate
    learned = json.loads((settings.data_dir / COSTS_FILE).read_text())
    assert learned["segment"] > 0
    assert not list(files.folder.glob(".job*")) and not list(files.folder.glob(".part*"))


def test_progress_plan_moves_with_time_and_never_passes_a_stage_end() -> None:
    now = [0.0]
    costs = {"segment": 1.0, "levels_measurements": 0.5, "record": 0.001}
    plan = ProgressPlan(["segment", "levels_measurements", "record"], 2_000_000, costs, start=0.1,
                        clock=lambda: now[0])
    assert plan.expected == {"segment": 2.0, "levels_measurements": 1.0, "record": 0.05}
    plan.begin("segment")
    now[0] = 0.5  # a quarter of the estimate
    plan.report(0.6)  # the network's own fraction, ahead of the time
    low, high = plan.spans["segment"]
    assert plan.fraction() == pytest.approx(low + (high - low) * 0.6)
    plan.begin("segment")
    seen = []
    for _ in range(40):  # 4 s: twice the estimate of the stage
        now[0] += 0.1
        seen.append(plan.fraction())
    assert low == pytest.approx(0.1) and seen == sorted(seen) and seen[-1] < high
    assert seen[-1] - seen[-10] > 0  # an overrun stage still moves
    assert seen[15] == pytest.approx(low + (high - low) * 0.8)  # linear until 80 % of the estimate
    plan.begin("levels_measurements")
    assert plan.fraction() == pytest.approx(high)
    assert plan.seconds_left() == pytest.approx(1.05)
    plan.begin("record")
    now[0] += 100
    assert plan.fraction() < 1.0


def test_learned_costs_move_towards_the_measured_ones(tmp_path: Path) -> None:
    seed = load_costs(tmp_path)["segment"]
    learn_costs(tmp_path, {"segment": 10.0, "unknown": 3.0}, 1_000_000)
    learned = load_costs(tmp_path)
    assert seed < learned["segment"] < 10.0 and "unknown" not in learned
    (tmp_path / COSTS_FILE).write_text("not json")
    assert load_costs(tmp_path)["segment"] == seed  # a damaged file: the seed again, no error


def test_stage_times_sum_repeated_stages_and_name_them() -> None:
    times = StageTimes({"read": 1.0})
    times.add("deidentify", 0.5)
    times.add("deidentify", 0.25)
    with pytest.raises(RuntimeError), times.stage("segment"):
        raise RuntimeError("a failed stage is timed too")
    assert list(times.as_json()) == ["read", "deidentify", "segment"]
    assert times.as_json()["deidentify"] == 0.75
    assert stage_rows({"levels_measurements": 1.0, "odd": 2.0}) == [("vertebra levels and measurements", 1.0),
                                                                     ("odd", 2.0)]
    assert np.isclose(times.total(), 1.75 + times.as_json()["segment"])
