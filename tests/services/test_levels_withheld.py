"""A vertebra that fails its quality checks shows no measurements, only why (services.levels):
in the measurement rows, the summary's entries and vertebrae.csv alike."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from spineseg.services.levels import (
    WITHHELD_KEYS,
    compute_levels,
    levels_summary,
    write_colour_table,
    write_measurements_csv,
)
from tests.model.synthetic_spine import BODY_MM, DISC_MM, RADIUS_MM, SPACING, build_spine

NAMES = ["T12", "L1", "L2", "L3", "L4"]


def test_clean_column_keeps_its_measurements_and_a_bridged_disc_withholds_its_neighbours(tmp_path: Path) -> None:
    spine = build_spine(NAMES, ribs={"T12"}, sacrum=True)
    levels, rows = compute_levels(spine.mask, spine.ct, spine.affine)
    assert len(rows) == len(NAMES) + 1  # with the sacrum
    assert all(r["quality"] == "ok" and r["withheld"] is None and r["hu_mean"] is not None for r in rows)

    bridged = spine.mask.copy()  # the second disc marked as bone: the body cylinder runs on through it
    nx, _, nz = bridged.shape
    x, y = np.meshgrid(np.arange(nx) * SPACING, np.arange(bridged.shape[1]) * SPACING, indexing="ij")
    cylinder = np.hypot(x - nx * SPACING / 2, y - 80.0) <= RADIUS_MM
    top = nz * SPACING - 10.0 - 2 * BODY_MM - DISC_MM  # the second vertebra's lower endplate
    disc = slice(int(np.floor((top - DISC_MM) / SPACING)), int(np.ceil(top / SPACING)) + 1)
    bridged[:, :, disc] |= cylinder[:, :, None].astype(bridged.dtype)
    levels, rows = compute_levels(bridged, spine.ct, spine.affine)
    withheld = {r["name"]: r for r in rows if r["withheld"]}
    assert [r["name"] in withheld for r in rows] == [False, True, True, False, False, False]
    for row in withheld.values():
        assert row["quality"] != "ok" and all(row[k] is None for k in WITHHELD_KEYS)
        assert row["assessable"] is False and row["not_assessable"]
    assert any("disc" in row["withheld"] for row in withheld.values())
    entries = levels_summary(levels, rows)["vertebrae"]
    shown = {e["name"]: e["measures"] for e in entries}
    assert all(shown[name]["withheld"] == row["withheld"] and shown[name]["hu_mean"] is None
               for name, row in withheld.items())
    # The name is withheld too, wherever it is shown: the reader sees which vertebra the row is,
    # never the level as a finding.
    assert all(e["name_withheld"] is (e["name"] in withheld) for e in entries)
    assert {e["shown_name"] for e in entries if e["name_withheld"]} == {f"withheld (read as {n})" for n in withheld}
    assert all(e["shown_name"] == e["name"] for e in entries if not e["name_withheld"])
    table = list(csv.DictReader(write_measurements_csv(rows, tmp_path / "v.csv").open()))
    assert [line["name"] for line in table] == [
        f"withheld (read as {r['name']})" if r["withheld"] else r["name"] for r in rows]
    for line in table:
        if line["name"].startswith("withheld"):
            assert line["hu_mean"] == "" and line["height_middle_mm"] == "" and line["withheld"]
        else:
            assert line["withheld"] == ""
    colours = json.loads(write_colour_table(levels, tmp_path / "c.json", rows).read_text())["labels"]
    assert [c["name"] for c in colours] == [e["shown_name"] for e in entries]
    assert [bool(c.get("name_withheld")) for c in colours] == [e["name_withheld"] for e in entries]
