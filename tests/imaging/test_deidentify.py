"""De-identification of one DICOM dataset (PS3.15 Basic Profile) and of a NIfTI header."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from spineseg.errors import InputError
from spineseg.imaging.deidentify import (
    DeidentifyOptions,
    date_shift_for,
    deidentify_dataset,
    patient_identity,
    pseudonym_for,
    uid_replacement,
)
from spineseg.imaging.deidentify_profile import ACTIONS_BY_TAG, PROFILE
from spineseg.imaging.io import load_volume
from spineseg.imaging.nifti_deidentify import deidentify_nifti
from tests.imaging.phi_series import PHI, leaks, phi_dataset, write_phi_series

KEY = b"k" * 32


def _options(ds: pydicom.Dataset, *, shift: bool = True) -> DeidentifyOptions:
    identity = patient_identity(ds)
    return DeidentifyOptions(KEY, pseudonym_for(KEY, identity), date_shift_for(KEY, identity) if shift else None)


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_table_covers_every_attribute_group_and_names_real_keywords() -> None:
    assert set(PROFILE) >= {"patient identity", "physicians and operators", "institution and device",
                            "identifiers of the visit, order and study", "dates and times",
                            "descriptions and free text", "unique identifiers"}
    assert len(ACTIONS_BY_TAG) == sum(len(group) for group in PROFILE.values()) > 150


def test_no_identifier_survives_and_the_record_is_written() -> None:
    source = phi_dataset(0)
    assert len(leaks(_bytes(source))) >= 15  # the test data does carry them
    ds = deidentify_dataset(source, _options(source))
    assert leaks(_bytes(ds)) == []
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
    assert "Basic Application Confidentiality Profile" in ds.DeidentificationMethod[0]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientID == pseudonym_for(KEY, patient_identity(phi_dataset(0))) == ds.PatientName.family_name
    assert ds.PatientBirthDate == "" and ds.PatientSex == "" and ds.AccessionNumber == ""
    assert ds.ReferringPhysicianName == "" and "InstitutionName" not in ds and "PatientAddress" not in ds
    assert not any(element.tag.is_private for element in ds.iterall())
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert (ds.Modality, ds.BodyPartExamined, ds.SOPClassUID) == ("CT", "CHEST", pydicom.uid.CTImageStorage)


def test_uids_are_replaced_consistently_and_dates_shift_together() -> None:
    first, second = (deidentify_dataset(phi_dataset(i), _options(phi_dataset(i))) for i in (0, 1))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert first[keyword].value == second[keyword].value == uid_replacement(KEY, PHI[{
            "StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid",
            "FrameOfReferenceUID": "frame_uid"}[keyword]])
        assert first[keyword].value.startswith("2.25.") and len(first[keyword].value) <= 64
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SOPInstanceUID == first.file_meta.MediaStorageSOPInstanceUID
    assert first.ReferencedImageSequence[0].ReferencedSOPClassUID == pydicom.uid.CTImageStorage
    assert first.StudyDate == second.StudyDate != PHI["study_date"]
    assert first.StudyTime == "101500"  # times kept under 113107, dates moved


def test_without_the_dates_option_dates_and_times_go() -> None:
    ds = deidentify_dataset(phi_dataset(0), _options(phi_dataset(0), shift=False))
    assert ds.StudyDate == "" and "SeriesDate" not in ds and ds.StudyTime == "" and "SeriesTime" not in ds
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_pseudonyms_are_stable_per_patient_and_keyed() -> None:
    same = patient_identity(phi_dataset(0)), patient_identity(phi_dataset(5))
    other = patient_identity(phi_dataset(0, patient={"mrn": "MRN-000001"}))
    assert pseudonym_for(KEY, same[0]) == pseudonym_for(KEY, same[1]) != pseudonym_for(KEY, other)
    assert pseudonym_for(KEY, same[0]) != pseudonym_for(b"another key " * 3, same[0])
    assert PHI["mrn"] not in pseudonym_for(KEY, same[0])


def test_burned_in_annotation_is_refused_naming_the_file() -> None:
    ds = phi_dataset(0, burned_in="YES")
    with pytest.raises(InputError, match="Burned In Annotation") as refused:
        deidentify_dataset(ds, _options(ds), source="scan/IM0001.dcm")
    assert refused.value.source == "scan/IM0001.dcm"
    assert ds.PatientID == PHI["mrn"]  # refused before anything changed


def test_a_deidentified_series_still_reads_as_one_volume(tmp_path: Path) -> None:
    from spineseg.services.deidentification import deidentify_dicom_folder

    write_phi_series(tmp_path / "in", count=6)
    result = deidentify_dicom_folder(tmp_path / "in", tmp_path / "in", KEY)
    assert sorted(p.name for p in result.path.iterdir()) == [f"{i:05d}.dcm" for i in range(1, 7)]
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["series"]
    volume = load_volume(result.path)
    assert volume.shape == (48, 48, 6)
    assert volume.provenance.series_uid == uid_replacement(KEY, PHI["series_uid"])


def test_nifti_text_fields_and_extensions_are_cleared(tmp_path: Path) -> None:
    array = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)
    image = nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.5, 1.0]))
    image.header["descrip"] = b"DOE JANE MRN-998877"
    image.header["aux_file"] = b"MRN-998877"
    image.header["intent_name"] = b"DOE"
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient DOE^JANE MRN-998877 " * 4))
    source = tmp_path / "DOE_JANE.nii.gz"
    nib.save(image, source)
    with gzip.open(source) as stream:
        assert b"MRN-998877" in stream.read()
    target = deidentify_nifti(source, tmp_path / "ct.nii.gz")
    assert not source.exists()
    raw = target.read_bytes()
    assert b"DOE_JANE" not in raw  # the gzip header's file name is not the upload's
    inflated = gzip.decompress(raw)
    assert b"MRN-998877" not in inflated and b"DOE" not in inflated
    cleaned = nib.load(target)
    assert cleaned.header["descrip"].item() == b"" and len(cleaned.header.extensions) == 0
    assert np.array_equal(np.asarray(cleaned.dataobj), array)
    assert np.allclose(cleaned.affine, image.affine)


def test_an_uncompressed_nifti_is_cleaned_in_place(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.float32), np.eye(4))
    image.header["descrip"] = b"MRN-998877"
    path = tmp_path / "ct.nii"
    nib.save(image, path)
    deidentify_nifti(path, path)
    assert b"MRN-998877" not in path.read_bytes()
    assert np.array_equal(np.asarray(nib.load(path).dataobj), np.ones((4, 4, 4)))
