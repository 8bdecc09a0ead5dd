"""The training form says how each dataset's split will come out, and warns when validation
would be empty, before a run is started."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from spineseg.store.database import open_database
from spineseg.store.datasets import add_case, create_dataset
from spineseg.web.app import create_app
from tests.web.test_sessions_and_pages import HTML
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


def make_dataset(settings, name: str, patients: list[str]) -> str:
    database = open_database(settings.sqlalchemy_url)
    with database.session() as session:
        dataset = create_dataset(session, name=name, description="", created_by="rene")
        for i, patient in enumerate(patients):
            add_case(session, dataset=dataset, case_id=f"{name}{i}".ljust(32, "0"), name=f"{name}-{i}",
                     patient=patient, site="", convention="auto", partial=False, ct_path="ct", labels_path="labels",
                     coverage={"slices": 10}, added_by="rene")
        dataset_id = dataset.id
    database.dispose()
    return dataset_id


def test_the_form_previews_the_split_and_warns_about_empty_validation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "rene", "researcher")
    pair = make_dataset(settings, "pair", ["P1", "P2", "P2"])
    single = make_dataset(settings, "single", ["P9"])
    with TestClient(create_app(settings)) as client:
        page = client.get(f"/training?dataset={pair}", headers=HTML | bearer(token))
    assert page.status_code == 200
    pair_block = page.text.split(f'id="split-preview-{pair}"')[1].split("</div>")[0]
    assert "train 1 / val 1 / test 0 patients" in pair_block and "data-split-warning" not in pair_block
    assert "hidden" not in pair_block.split(">")[0]
    single_block = page.text.split(f'id="split-preview-{single}"')[1].split("</div>")[0]
    assert "train 1 / val 0 / test 0 patients" in single_block
    assert "no patient is in the validation split" in single_block and f"/datasets/{single}" in single_block
    assert "training_start.js" in page.text
