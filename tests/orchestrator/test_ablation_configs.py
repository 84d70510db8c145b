"""Each ready-made ablation config is the paper Table 8 row its header names (and validates)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = ROOT / "configs" / "ablations"

# Paper Table 8: (ANS, CAD, CAL, CASD, RD) per row; row 7 is DANCE.
TABLE8 = {
    1: (False, False, False, False, False),
    2: (True, False, False, False, False),
    3: (True, True, False, False, False),
    4: (True, True, True, False, False),
    5: (True, False, False, False, True),
    6: (True, False, False, True, False),
    7: (True, True, True, True, False),
}


def labelled_rows() -> dict[int, Path]:
    out = {}
    for path in sorted(ABLATIONS.glob("*.yaml")):
        m = re.search(r"Table 8, row (\d)", path.read_text().splitlines()[0])
        if m:
            out[int(m.group(1))] = path
    return out


def test_every_table8_row_has_one_config():
    assert sorted(labelled_rows()) == sorted(TABLE8)


@pytest.mark.parametrize("row", sorted(TABLE8))
def test_config_switches_match_its_row(row):
    path = labelled_rows()[row]
    cfg = load_config(path)
    s = cfg.slimming
    assert (cfg.ans.enabled, s.cad, s.cal, s.casd, s.rd) == TABLE8[row], path.name
    assert cfg.train.mode == "co"


def test_every_ablation_config_validates():
    for path in ABLATIONS.glob("*.yaml"):
        load_config(path)
