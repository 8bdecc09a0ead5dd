"""Reading a TID 1500 measurement SR back with plain pydicom (not with the writer's code), and
checking it against the run's summary it was made from: every value, code and reference."""

from __future__ import annotations

from typing import Any

import pydicom

from spineseg.model.level_ids import GENERIC_VERTEBRA, label_name, snomed_code

# summary key -> (concept code value, derivation code value); the SR's coding, written out here
# on its own so that a change in the writer's table shows up as a failing test
CONCEPTS = {"hu_mean": ("112031", "373098007"), "hu_median": ("112031", "373099004"), "roi_ml": ("TRABROI", None),
            "volume_ml": ("118565006", None), "height_anterior_mm": ("HA", None),
            "height_middle_mm": ("HM", None), "height_posterior_mm": ("HP", None), "ha_hp": ("HAHP", None),
            "hm_hp": ("HMHP", None), "hp_neighbours": ("HPNB", None)}
GRADE_CODES = {0: "G0", 1: "G1", 2: "G2", 3: "G3"}
VERDICT_CODES = {"ok": "QOK", "review": "QREVIEW", "not assessable": "QNA"}


def _name(item: pydicom.Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def read_groups(sr: pydicom.Dataset) -> list[dict[str, Any]]:
    """Each measurement group of the SR: tracking id, finding site, algorithm version, numbers
    by (concept, derivation), coded evaluations, texts, the referenced segment and source images."""
    [measurements] = [item for item in sr.ContentSequence if _name(item) == "126010"]
    groups = []
    for group in measurements.ContentSequence:
        found: dict[str, Any] = {"numbers": {}, "codes": {}, "texts": {}, "sources": set(), "units": {}}
        for item in group.ContentSequence:
            name, kind = _name(item), item.ValueType
            if kind == "NUM":
                derivation = next((str(c.ConceptCodeSequence[0].CodeValue) for c in item.get("ContentSequence", [])
                                   if _name(c) == "121401"), None)
                value = item.MeasuredValueSequence[0]
                found["numbers"][(name, derivation)] = float(value.NumericValue)
                found["units"][(name, derivation)] = str(value.MeasurementUnitsCodeSequence[0].CodeValue)
            elif kind == "CODE":
                code = item.ConceptCodeSequence[0]
                found["codes"][name] = (str(code.CodeValue), str(code.CodingSchemeDesignator))
            elif kind == "TEXT":
                found["texts"].setdefault(name, []).append(str(item.TextValue))
            elif kind == "IMAGE" and name == "121191":
                ref = item.ReferencedSOPSequence[0]
                found["segment"] = (str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber))
            elif kind == "IMAGE" and name == "121233":
                found["sources"].add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        groups.append(found)
    return groups


def check_against_summary(sr: pydicom.Dataset, levels_seg: pydicom.Dataset, source_uids: set[str],
                          summary: dict[str, Any], model_id: str) -> int:
    """Assert that ``sr`` carries every value of ``summary``'s vertebrae and refers to
    ``levels_seg``'s segment of the same name and to source images among ``source_uids``;
    returns how many numbers were compared."""
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    groups = read_groups(sr)
    vertebrae = summary["vertebrae"]
    assert len(groups) == len(vertebrae)
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in levels_seg.SegmentSequence}
    verdicts = {v["name"]: v for v in summary["quality"].get("vertebrae", [])}
    compared = 0
    for group, entry in zip(groups, vertebrae, strict=True):
        level = label_name(entry["label"])
        withheld = entry["measures"].get("withheld")
        # a vertebra whose name the quality checks withheld: no level coded, the reading said as such
        name = f"withheld (read as {level})" if withheld else level
        site = GENERIC_VERTEBRA[0] if withheld else snomed_code(entry["label"])[0]
        assert group["texts"]["112039"] == [name]  # tracking identifier
        assert group["codes"]["363698007"] == (site, "SCT")  # finding site: the level, or a vertebra
        assert group["codes"]["121071"] == (site, "SCT")  # finding: the same
        if withheld:
            assert group["texts"]["LVLWITHHELD"] == [
                f"level withheld (read as {level} by the model, not confirmed): {withheld}"]
        else:
            assert "LVLWITHHELD" not in group["texts"]
        assert group["texts"]["111003"] == [model_id]  # algorithm version
        seg_uid, number = group["segment"]
        assert seg_uid == levels_seg.SOPInstanceUID and segments[number] == name
        assert group["sources"] and group["sources"] <= source_uids
        measures = entry["measures"] | {"volume_ml": entry["volume_ml"]}
        for key, concept in CONCEPTS.items():
            if measures.get(key) is None:
                assert concept not in group["numbers"], f"{name}: {key} is withheld but was written"
            else:
                assert group["numbers"][concept] == measures[key], f"{name}: {key}"
                compared += 1
        graded = measures["assessable"] and measures["genant_grade"] is not None
        if graded:
            assert group["codes"]["GENANT"] == (GRADE_CODES[measures["genant_grade"]], "99SPINESEG")
            assert "NAREASON" not in group["texts"]
        else:
            assert group["codes"]["GENANT"] == ("NA", "99SPINESEG")
            assert group["texts"]["NAREASON"] == [measures["not_assessable"]]
        assert ("DENSFLAG" in group["codes"]) == bool(measures["density_flag"])
        assert group["codes"]["QUALITY"] == (VERDICT_CODES[summary["quality"]["verdict"]], "99SPINESEG")
        own = verdicts.get(level)
        if own is not None:
            assert group["codes"]["VQUALITY"] == (VERDICT_CODES[own["verdict"]], "99SPINESEG")
            assert group["texts"].get("QREASON", []) == [*summary["quality"]["reasons"], *own["reasons"]]
    return compared
