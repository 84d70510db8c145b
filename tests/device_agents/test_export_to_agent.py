"""The exporter's manifest is what the device agent measures: one result per bucket, fractions kept."""
import json
import subprocess
import sys
from pathlib import Path

from workers.dance.cdf import MaxwellCDF
from workers.export import Bucket, export_model
from workers.models import build_model

ROOT = Path(__file__).resolve().parents[2]


def test_agent_measures_every_bucket_of_an_exported_manifest(tmp_path):
    model = build_model("deeplabv3plus", num_classes=5, variant="small").eval()
    buckets = [Bucket(64, 128, 0.75), Bucket(32, 64, 0.25)]
    export_model(model, tmp_path / "export", "onnx", buckets, cdf=MaxwellCDF(3.0, 10.0),
                 class_names=[f"c{i}" for i in range(5)])
    manifest = tmp_path / "export" / "manifest.json"
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "device_agents", "measure", "--manifest", str(manifest), "--runtime", "onnxruntime",
         "--power", "none", "--duration", "0.3", "--repeats", "2", "--idle", "0", "--warmup", "0.1",
         "--threads", "1", "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and result["num_classes"] == 5
    sizes = sorted((b["height"], b["width"], b["fraction"]) for b in result["buckets"])
    assert sizes == [(32, 64, 0.25), (64, 128, 0.75)]
    for b in result["buckets"]:
        assert b["latency_ms"]["p50"] > 0
        assert b["energy_j_per_image_gross"] is None  # no power source: absent, never zero
    assert result["energy_j_per_image_gross"] is None
