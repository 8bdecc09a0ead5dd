"""The attribute table of DICOM PS3.15 Annex E (Basic Application Level Confidentiality
Profile, Table E.1-1) as SpineSeg applies it: a representative selection of the table's
attributes, grouped as in docs/deidentification.md, each with the profile's action.

Actions (PS3.15 E.3.1, the codes of the table):

- ``X`` remove the attribute;
- ``Z`` replace with a zero-length value (type 2 attributes a reader or a SEG needs present);
- ``U`` replace the UID with another, consistently (``deidentify.uid_replacement``: the same
  source UID gives the same new UID for every file of the study, and of any later upload);
- ``P`` (SpineSeg's mark for ``Z`` with a dummy value) replace with the study's pseudonym
  (Patient Name, Patient ID: the profile allows a dummy value of the VR for ``Z``/``D``);
- ``DATE`` a date: removed (``X``; ``Z`` for those in ``EMPTIED_DATES``), or shifted by the
  patient's offset when the option
  *Retain Longitudinal Temporal Information with Modified Dates* (113107) is applied;
- ``TIME`` a time: removed, or kept under that option (only the dates are modified).

Beyond the table ``deidentify`` also removes every private attribute, the overlay (60xx) and
curve (50xx) groups, and — as a safety net for attributes the table lists but this selection
does not — empties any remaining person name (PN), replaces any remaining instance UID (UI,
not a registered class or syntax UID) and removes or shifts any remaining date (DA, DT).
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

X, Z, U, P, DATE, TIME = "X", "Z", "U", "P", "DATE", "TIME"

# group -> {keyword: action}; the groups are the rows of the table in docs/deidentification.md.
PROFILE: dict[str, dict[str, str]] = {
    "patient identity": {
        "PatientName": P, "PatientID": P, "IssuerOfPatientID": X, "PatientBirthDate": Z, "PatientBirthTime": X,
        "PatientSex": Z, "PatientAge": X, "PatientSize": X, "PatientWeight": X, "OtherPatientIDs": X,
        "OtherPatientIDsSequence": X, "OtherPatientNames": X, "PatientBirthName": X, "PatientMotherBirthName": X,
        "PatientAddress": X, "PatientTelephoneNumbers": X, "PatientTelecomInformation": X, "MilitaryRank": X,
        "BranchOfService": X, "MedicalRecordLocator": X, "EthnicGroup": X, "Occupation": X,
        "AdditionalPatientHistory": X, "PatientComments": X, "PatientReligiousPreference": X,
        "CountryOfResidence": X, "RegionOfResidence": X, "PatientInsurancePlanCodeSequence": X,
        "PatientPrimaryLanguageCodeSequence": X, "MedicalAlerts": X, "Allergies": X, "SmokingStatus": X,
        "PregnancyStatus": X, "LastMenstrualDate": X, "PatientState": X, "SpecialNeeds": X,
        "ResponsiblePerson": X, "ResponsibleOrganization": X, "PatientSexNeutered": X,
        "PatientAlternativeCalendar": X, "PatientBirthDateInAlternativeCalendar": X,
        "ReferencedPatientSequence": X, "CurrentPatientLocation": X, "PatientInstitutionResidence": X,
        "AssignedLocation": X, "InsurancePlanIdentification": X,
    },
    "physicians and operators": {
        "ReferringPhysicianName": Z, "ReferringPhysicianAddress": X, "ReferringPhysicianTelephoneNumbers": X,
        "ReferringPhysicianIdentificationSequence": X, "ConsultingPhysicianName": X, "PhysiciansOfRecord": X,
        "PhysiciansOfRecordIdentificationSequence": X, "PerformingPhysicianName": X,
        "PerformingPhysicianIdentificationSequence": X, "NameOfPhysiciansReadingStudy": X,
        "PhysiciansReadingStudyIdentificationSequence": X, "OperatorsName": X, "OperatorIdentificationSequence": X,
        "RequestingPhysician": X, "ScheduledPerformingPhysicianName": X, "PersonName": X, "PersonAddress": X,
        "PersonTelephoneNumbers": X, "PersonTelecomInformation": X, "ContentCreatorName": Z,
        "VerifyingObserverName": Z, "ReviewerName": X, "OrderEnteredBy": X, "OrderEntererLocation": X,
        "OrderCallbackPhoneNumber": X, "OrderCallbackTelecomInformation": X,
    },
    "institution and device": {
        "InstitutionName": X, "InstitutionAddress": X, "InstitutionalDepartmentName": X,
        "InstitutionCodeSequence": X, "InstitutionalDepartmentTypeCodeSequence": X, "StationName": X,
        "StationAETitle": X, "RetrieveAETitle": X, "ScheduledStationAETitle": X, "PerformedStationAETitle": X,
        "SourceApplicationEntityTitle": X, "DeviceSerialNumber": X, "DeviceUID": U, "PlateID": X, "DetectorID": X,
        "GantryID": X, "GeneratorID": X, "CassetteID": X, "SourceSerialNumber": X, "PerformedStationName": X,
        "PerformedLocation": X, "ScheduledStationName": X, "ScheduledProcedureStepLocation": X,
        "RequestingService": X, "ClinicalTrialSponsorName": X, "ClinicalTrialSiteID": X,
        "ClinicalTrialSiteName": X, "ClinicalTrialCoordinatingCenterName": X,
    },
    "identifiers of the visit, order and study": {
        "AccessionNumber": Z, "StudyID": Z, "IssuerOfAccessionNumberSequence": X, "AdmissionID": X,
        "IssuerOfAdmissionIDSequence": X, "ServiceEpisodeID": X, "ServiceEpisodeDescription": X,
        "RequestedProcedureID": X, "ScheduledProcedureStepID": X, "PerformedProcedureStepID": X,
        "PlacerOrderNumberImagingServiceRequest": X, "FillerOrderNumberImagingServiceRequest": X,
        "ReferencedStudySequence": X, "ReferencedPerformedProcedureStepSequence": X, "RequestAttributesSequence": X,
        "StorageMediaFileSetID": X, "ClinicalTrialProtocolID": X, "ClinicalTrialSubjectID": X,
        "ClinicalTrialSubjectReadingID": X, "ClinicalTrialTimePointID": X,
    },
    "dates and times": {
        "StudyDate": DATE, "SeriesDate": DATE, "AcquisitionDate": DATE, "ContentDate": DATE,
        "AcquisitionDateTime": DATE, "InstanceCreationDate": DATE, "PerformedProcedureStepStartDate": DATE,
        "PerformedProcedureStepEndDate": DATE, "ScheduledProcedureStepStartDate": DATE,
        "ScheduledProcedureStepEndDate": DATE, "AdmittingDate": DATE, "DateOfLastCalibration": DATE,
        "StudyTime": TIME, "SeriesTime": TIME, "AcquisitionTime": TIME, "ContentTime": TIME,
        "InstanceCreationTime": TIME, "PerformedProcedureStepStartTime": TIME, "PerformedProcedureStepEndTime": TIME,
        "ScheduledProcedureStepStartTime": TIME, "ScheduledProcedureStepEndTime": TIME, "AdmittingTime": TIME,
        "TimeOfLastCalibration": TIME, "ContrastBolusStartTime": TIME, "ContrastBolusStopTime": TIME,
        "RadiopharmaceuticalStartTime": TIME,
    },
    "descriptions and free text": {
        "StudyDescription": X, "SeriesDescription": X, "ImageComments": X, "RequestedProcedureDescription": X,
        "PerformedProcedureStepDescription": X, "ScheduledProcedureStepDescription": X, "ReasonForStudy": X,
        "ReasonForTheRequestedProcedure": X, "ReasonForRequestedProcedureCodeSequence": X,
        "RequestedContrastAgent": X, "AdmittingDiagnosesDescription": X, "AdmittingDiagnosesCodeSequence": X,
        "DischargeDiagnosisDescription": X, "DerivationDescription": X, "ProtocolName": X,
        "ProcedureCodeSequence": X, "RequestedProcedureCodeSequence": X, "PerformedProtocolCodeSequence": X,
        "AcquisitionComments": X,
        "TextComments": X, "TextString": X, "FrameComments": X, "VisitComments": X, "StudyComments": X,
        "RequestedProcedureComments": X, "ImagingServiceRequestComments": X,
        "CommentsOnThePerformedProcedureStep": X, "IdentifyingComments": X, "ContrastBolusAgent": Z,
        "ContentSequence": X, "AcquisitionContextSequence": X,
    },
    "unique identifiers": {
        "StudyInstanceUID": U, "SeriesInstanceUID": U, "SOPInstanceUID": U, "MediaStorageSOPInstanceUID": U,
        "FrameOfReferenceUID": U, "ReferencedSOPInstanceUID": U, "ReferencedFrameOfReferenceUID": U,
        "SynchronizationFrameOfReferenceUID": U, "IrradiationEventUID": U, "ConcatenationUID": U,
        "DimensionOrganizationUID": U, "InstanceCreatorUID": U, "FiducialUID": U, "TransactionUID": U,
        "StorageMediaFileSetUID": U, "UID": U,
    },
    "signatures and original values": {
        "DigitalSignaturesSequence": X, "MACParametersSequence": X, "EncryptedAttributesSequence": X,
        "OriginalAttributesSequence": X, "ModifiedAttributesSequence": X,
    },
}

# Dates and times the profile empties (``Z``, type 2 in the General Study / Image modules)
# rather than removes, when they are not shifted.
EMPTIED_DATES = frozenset({"StudyDate", "StudyTime", "ContentDate", "ContentTime"})

# UIDs of these attributes name a class or an encoding, not an instance: never replaced.
KEPT_UID_KEYWORDS = frozenset({
    "SOPClassUID", "MediaStorageSOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "ReferencedTransferSyntaxUIDInFile", "CodingSchemeUID",
    "ContextGroupExtensionCreatorUID", "PrivateRecordUID", "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID", "SOPClassesInStudy", "MappingResourceUID", "ContextUID",
})


def _by_tag() -> dict[int, tuple[str, str]]:
    table: dict[int, tuple[str, str]] = {}
    for group in PROFILE.values():
        for keyword, action in group.items():
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"not a DICOM keyword in the de-identification table: {keyword!r}")
            table[int(tag)] = (keyword, action)
    return table


ACTIONS_BY_TAG: dict[int, tuple[str, str]] = _by_tag()
