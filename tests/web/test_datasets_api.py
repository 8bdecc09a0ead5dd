"""Datasets, imports and the multi-centre view through the API: refused uploads leave nothing
behind, cases from studies, split edits, importing a version from another site, per-site
evaluation, and a fine-tune on two real shared cases."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.model.card import ModelCard
from spineseg.registry import Registry
from spineseg.web.app import create_app
from tests.conftest import make_model_folder
from tests.model.conftest import write_phantom_case
from tests.web.conftest import WebEnv
from tests.web.training_helpers import BASE_VERSION, case_parts, register_tiny_base, wait_for_job, wait_for_run
from tests.web.web_helpers import add_user, bearer, make_settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    settings = backends(make_settings(tmp_path_factory.mktemp("datasets-data")))
    register_tiny_base(settings)
    tokens = {"researcher": add_user(settings, "rosa", "researcher"),
              "clinician": add_user(settings, "cleo", "clinician")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def new_dataset(env: WebEnv, name: str) -> dict:
    response = env.client.post("/api/datasets", json={"name": name}, headers=bearer(env.tokens["researcher"]))
    assert response.status_code == 201, response.text
    return response.json()


def case_files_left(env: WebEnv, dataset_id: str) -> list[Path]:
    folder = env.settings.data_dir / "datasets" / dataset_id
    return list(folder.rglob("*")) if folder.exists() else []


def test_labels_that_miss_the_ct_or_hold_no_spine_are_refused_and_nothing_remains(env: WebEnv, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = new_dataset(env, "refusals")
    ct, labels = write_phantom_case(tmp_path / "case", seed=1)
    image = nib.load(str(labels))
    far = image.affine.copy()
    far[:3, 3] += 5000.0  # five metres away: the grids do not overlap
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), far), str(tmp_path / "far.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(tmp_path / "empty.nii.gz"))
    organs = (np.asarray(image.dataobj) > 0).astype(np.uint8) * 5  # TotalSegmentator id 5 = liver, not spine
    nib.save(nib.Nifti1Image(organs, image.affine), str(tmp_path / "organs.nii.gz"))

    for truth, convention, expected in (("far.nii.gz", "auto", "does not overlap the CT"),
                                        ("empty.nii.gz", "auto", "no spine labels"),
                                        ("organs.nii.gz", "totalsegmentator", "no spine labels")):
        parts = [("files", ("ct.nii.gz", ct.read_bytes(), "x")),
                 ("truth", (truth, (tmp_path / truth).read_bytes(), "x"))]
        response = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=parts,
                                   data={"patient": "P1", "convention": convention}, headers=headers)
        assert response.status_code == 422, response.text
        assert expected in response.json()["detail"] and truth in response.json()["detail"]
        assert str(env.settings.data_dir) not in response.json()["detail"]
    missing = env.client.post(f"/api/datasets/{dataset['id']}/cases", headers=headers, data={"patient": "P1"},
                              files=[("files", ("ct.nii.gz", ct.read_bytes(), "x"))])
    assert missing.status_code == 422 and "label map is required" in missing.json()["detail"]
    no_patient = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=case_parts(tmp_path / "c2", 2),
                                 headers=headers)
    assert no_patient.status_code == 422 and "patient" in no_patient.json()["detail"]

    after = env.client.get(f"/api/datasets/{dataset['id']}", headers=headers).json()
    assert after["counts"]["cases"] == 0 and after["cases"] == []
    assert case_files_left(env, dataset["id"]) == []


def test_split_edits_duplicates_and_removal(env: WebEnv, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = new_dataset(env, "split-edits")
    url = f"/api/datasets/{dataset['id']}"
    for patient, seed in (("A", 1), ("B", 2), ("C", 3)):
        response = env.client.post(f"{url}/cases", files=case_parts(tmp_path / patient, seed),
                                   data={"patient": patient, "site": "west", "name": f"scan-{patient}"},
                                   headers=headers)
        assert response.status_code == 201, response.text
    duplicate = env.client.post(f"{url}/cases", files=case_parts(tmp_path / "dup", 4),
                                data={"patient": "D", "name": "scan-A"}, headers=headers)
    assert duplicate.status_code == 422 and "already has a case named 'scan-A'" in duplicate.json()["detail"]
    assert env.client.post("/api/datasets", json={"name": "split-edits"}, headers=headers).status_code == 422

    dealt = env.client.get(url, headers=headers).json()
    assert {p["split"] for p in dealt["patients"]} <= {"train", "val", "test"} and dealt["counts"]["train"] >= 1
    assert not any(p["chosen"] for p in dealt["patients"])
    chosen = env.client.put(f"{url}/split", json={"patients": {"A": "test", "B": "train"}}, headers=headers).json()
    by_patient = {p["patient"]: p for p in chosen["patients"]}
    assert by_patient["A"]["split"] == "test" and by_patient["A"]["chosen"] and by_patient["B"]["split"] == "train"
    back = env.client.put(f"{url}/split", json={"patients": {"A": "auto"}}, headers=headers).json()
    assert not {p["patient"]: p for p in back["patients"]}["A"]["chosen"]
    for bad, message in (({"Z": "train"}, "no case"), ({"A": "holdout"}, "not one of")):
        response = env.client.put(f"{url}/split", json={"patients": bad}, headers=headers)
        assert response.status_code == 422 and message in response.json()["detail"]

    case_id = next(c["id"] for c in chosen["cases"] if c["name"] == "scan-C")
    removed = env.client.delete(f"{url}/cases/{case_id}", headers=headers)
    assert removed.status_code == 200 and removed.json()["counts"]["cases"] == 2
    assert not (env.settings.data_dir / "datasets" / dataset["id"] / case_id).exists()


def test_case_from_a_study_with_truth_and_per_site_evaluation(env: WebEnv, tmp_path: Path) -> None:
    clinician, researcher = env.tokens["clinician"], env.tokens["researcher"]
    ids = []
    for seed, site in ((7, "east"), (8, "east"), (9, "west")):
        upload = env.client.post("/api/studies", files=case_parts(tmp_path / f"s{seed}", seed),
                                 headers=bearer(clinician))
        assert upload.status_code == 202, upload.text
        assert wait_for_job(env.client, upload.json()["job_id"], clinician)["status"] == "done"
        study_id = upload.json()["study_id"]
        tagged = env.client.put(f"/api/studies/{study_id}/site", json={"site": site}, headers=bearer(clinician))
        assert tagged.json() == {"study_id": study_id, "site": site}
        versions = env.client.get(f"/api/studies/{study_id}/versions", headers=bearer(clinician)).json()
        assert versions["site"] == site and versions["model_id"] == versions["production"] == BASE_VERSION
        ids.append(study_id)

    by_site = env.client.get("/api/evaluation/by-site", params={"ids": ",".join(ids)}, headers=bearer(researcher))
    assert by_site.status_code == 200, by_site.text
    sites = by_site.json()["sites"]
    assert {k: v["studies"] for k, v in sites.items()} == {"east": 2, "west": 1}
    assert sites["east"]["metrics"]["dice"]["n"] == 2 and sites["west"]["metrics"]["dice"]["sd"] is None

    dataset = new_dataset(env, "from-studies")
    added = env.client.post(f"/api/datasets/{dataset['id']}/cases/from-study", headers=bearer(researcher),
                            json={"study_id": ids[0], "patient": "S7"})
    assert added.status_code == 201, added.text
    case = added.json()["dataset"]["cases"][0]
    assert case["source_study_id"] == ids[0] and case["site"] == "east" and case["patient"] == "S7"
    assert case["coverage"]["slices_with_spine"] == 16

    no_truth = env.client.post("/api/studies", headers=bearer(clinician),
                               files=[("files", ("ct.nii.gz", (tmp_path / "s7" / "ct.nii.gz").read_bytes(), "x"))])
    refused = env.client.post(f"/api/datasets/{dataset['id']}/cases/from-study", headers=bearer(researcher),
                              json={"study_id": no_truth.json()["study_id"], "patient": "S8"})
    assert refused.status_code == 422 and "no ground truth" in refused.json()["detail"]


def test_import_a_version_exported_at_another_site(env: WebEnv, tmp_path: Path) -> None:
    other = Registry(tmp_path / "other-site" / "models")
    folder = make_model_folder(tmp_path / "other-model", model_id="other-site-v1", seed=3)
    other.register(folder / "weights.safetensors", ModelCard.read(folder / "card.json"))
    archive = other.export("other-site-v1", tmp_path / "other-site-v1.zip")
    headers = bearer(env.tokens["researcher"])
    imported = env.client.post("/api/models/import", headers=headers,
                               files=[("files", ("other-site-v1.zip", archive.read_bytes(), "application/zip"))])
    assert imported.status_code == 201, imported.text
    assert imported.json()["id"] == "other-site-v1" and not imported.json()["is_production"]
    listed = env.client.get("/api/models", headers=headers).json()
    assert "other-site-v1" in {v["id"] for v in listed["versions"]}
    assert listed["production"] == BASE_VERSION
    junk = env.client.post("/api/models/import", headers=headers, files=[("files", ("junk.zip", b"not a zip", "x"))])
    assert junk.status_code == 422 and "junk.zip" in junk.json()["detail"]
    assert env.client.get("/api/models/no-such-version", headers=headers).status_code == 404


def test_fine_tune_on_two_real_shared_cases(env: WebEnv, shared_cases: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = new_dataset(env, "real-two")
    url = f"/api/datasets/{dataset['id']}"
    for folder, ct, labels, patient in (("ts-abdomen-small", "ct.nii.gz", "labels.nii.gz", "P1"),
                                        ("tptbox-lumbar", "sub-ct_label-22_ct.nii.gz",
                                         "sub-ct_seg-vert_label-22_msk.nii.gz", "P4")):
        parts = [("files", (ct, (shared_cases / folder / ct).read_bytes(), "x")),
                 ("truth", (labels, (shared_cases / folder / labels).read_bytes(), "x"))]
        response = env.client.post(f"{url}/cases", files=parts, data={"patient": patient, "site": folder},
                                   headers=headers)
        assert response.status_code == 201, response.text
    cases = {c["patient"]: c for c in env.client.get(url, headers=headers).json()["cases"]}
    assert cases["P1"]["coverage"]["levels"] == ["T11", "T12", "L1", "L2"]
    assert cases["P4"]["coverage"]["levels"] == ["L2", "L3", "L4"]
    env.client.put(f"{url}/split", json={"patients": {"P1": "train", "P4": "val"}}, headers=headers)
    started = env.client.post("/api/training", headers=headers, json={
        "dataset_id": dataset["id"], "base": BASE_VERSION,
        "settings": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 64}})
    run = wait_for_run(env.client, started.json()["id"], env.tokens["researcher"])
    assert run["status"] == "done", run
    assert run["history"][0]["val_dice"] is not None
    version = env.client.get(f"/api/models/{run['version_id']}", headers=headers).json()
    assert version["parent_id"] == BASE_VERSION
    # default names are numbers, never the client's file names (which often name the patient)
    assert {c["name"] for c in version["card"]["dataset"]["manifest"]} == {"case-1", "case-2"}


def test_dicom_series_with_per_structure_labels_in_a_zip(env: WebEnv, shared_cases: Path, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = new_dataset(env, "formats")
    dicom = shared_cases / "ts-dicom-thorax" / "dicom"
    parts = [("files", (f"dicom/{p.name}", p.read_bytes(), "application/dicom")) for p in sorted(dicom.iterdir())]
    parts.append(("truth", ("labels.nii.gz", (shared_cases / "ts-dicom-thorax" / "labels.nii.gz").read_bytes(), "x")))
    added = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=parts, data={"patient": "P2"},
                            headers=headers)
    assert added.status_code == 201, added.text
    case = added.json()["dataset"]["cases"][0]
    assert case["name"] == "case-1" and case["coverage"]["shape"] == [512, 512, 20]
    assert case["coverage"]["levels"] == ["T11", "T12"]

    ct, labels = write_phantom_case(tmp_path / "structures", seed=3)
    archive = tmp_path / "vertebrae.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(labels, "vertebrae_L2.nii.gz")
    response = env.client.post(f"/api/datasets/{dataset['id']}/cases", headers=headers, data={"patient": "P7"},
                               files=[("files", ("ct.nii.gz", ct.read_bytes(), "x")),
                                      ("truth", ("vertebrae.zip", archive.read_bytes(), "application/zip"))])
    assert response.status_code == 201, response.text
    zipped = next(c for c in response.json()["dataset"]["cases"] if c["patient"] == "P7")
    assert zipped["coverage"]["convention"] == "per-structure" and zipped["coverage"]["levels"] == ["L2"]


def test_case_folders_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    import os

    settings = make_settings(tmp_path / "data", workers=0)
    register_tiny_base(settings)
    token = add_user(settings, "rosa", "researcher")
    with TestClient(create_app(settings)) as client:
        dataset_id = client.post("/api/datasets", json={"name": "crashy"}, headers=bearer(token)).json()["id"]
        added = client.post(f"/api/datasets/{dataset_id}/cases", files=case_parts(tmp_path / "c", 1),
                            data={"patient": "P1"}, headers=bearer(token)).json()
    root = settings.data_dir / "datasets" / dataset_id
    kept = root / added["case_id"]
    stale, fresh = root / ("a" * 32), root / ("b" * 32)
    for folder in (stale, fresh):
        (folder / "ct").mkdir(parents=True)
    os.utime(stale, (0, 0))  # untouched for ages: a crashed upload
    os.utime(kept, (0, 0))
    with TestClient(create_app(settings)):
        pass
    assert kept.is_dir() and fresh.is_dir() and not stale.exists()


def test_a_case_is_not_named_after_the_clients_file(env: WebEnv, tmp_path: Path) -> None:
    """A file named after the patient names nothing in the database (issue 30 item 2): the
    default case name is a number, and no row keeps the client's name."""
    from tests.imaging.phi_series import FILE_NAME, rows_text

    dataset = new_dataset(env, "named-files")
    ct, labels = write_phantom_case(tmp_path / "named", seed=5)
    parts = [("files", (f"{FILE_NAME}.nii.gz", ct.read_bytes(), "x")),
             ("truth", (f"{FILE_NAME}_labels.nii.gz", labels.read_bytes(), "x"))]
    added = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=parts, data={"patient": "P9"},
                            headers=bearer(env.tokens["researcher"]))
    assert added.status_code == 201, added.text
    assert [c["name"] for c in added.json()["dataset"]["cases"]] == ["case-1"]
    assert FILE_NAME.lower() not in rows_text(env.settings.sqlalchemy_url).lower()
