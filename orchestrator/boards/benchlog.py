"""A bench in MLflow: figures, settings, quality and the per-rail record, into the right run.

* **Which run.** A run id's bench logs into that run (a sweep's trial, a training run); its
  kind stays what it is. A bare checkpoint's bench logs into the bench run of the same model
  (found by the model's sha256), so benching it again does not make a new run each time;
  ``--new-run`` asks for one.
* **One value per bench.** The figures of the n-th bench of a run are logged at step n
  (:data:`~orchestrator.runs.schema.BENCH_GENERATION_TAG`), so the latest value of every
  metric is the newest bench's; a figure equal to the one the run already has is not logged
  again (a cache hit adds nothing). MLflow keeps a metric's history, so the earlier benches'
  values stay visible there and their per-bucket JSONs under ``device/history/<n>/``.
* **Settings.** The protocol settings are params ``bench.*`` (MLflow keeps a param's first
  value: a later bench with other settings records them in the tag ``dance.bench.settings``).
* **Absent stays absent**: a tag without a value is not written, never as the string "None".
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.boards.figures import Measurement
from orchestrator.progress import format_value
from orchestrator.runs.schema import (
    BENCH_GENERATION_TAG,
    BENCH_MODEL_TAG,
    BENCH_PARAM_PREFIX,
    BENCH_SETTINGS_TAG,
    KIND_BENCH,
    KIND_TAG,
    tag_text,
)
from orchestrator.runs.tracking import resolve_tracking_uri, setup
from workers.digest import file_sha256

# mlflow is imported inside log_bench: `dance boards` and `dance bench --help` need none of it.

BUCKET = re.compile(r"^b\d+x\d+\.")  # per-bucket figures: device.<group>.b<h>x<w>.<figure>


@dataclass
class BenchRecord:
    """What one bench found, ready to log."""

    metrics: dict[str, float]
    tags: dict[str, str]
    measurements: list[Measurement]
    notes: list[str]
    settings: dict[str, Any]
    groups: list[str]  # every board group benched, measured or not


def log_bench(run_id: str | None, ckpt: Path, record: BenchRecord, tracking_uri: str | None, experiment: str,
              new_run: bool = False) -> tuple[str, str]:
    """Log ``record`` (see the module docstring for which run); returns (run id, tracking URI)."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    exp_id = setup(uri, experiment)
    client = mlflow.MlflowClient()
    sha = file_sha256(ckpt)
    owned = run_id is None
    if owned and not new_run:
        run_id = _earlier_bench(client, exp_id, sha)
    created = run_id is None
    if created:
        run_id = client.create_run(exp_id, run_name=f"bench-{ckpt.parent.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                   tags={KIND_TAG: KIND_BENCH, BENCH_MODEL_TAG: sha}).info.run_id
    run = client.get_run(run_id)
    generation = int(run.data.tags.get(BENCH_GENERATION_TAG, "-1")) + 1
    _log_figures(client, run, record, generation, owned)
    _log_params(client, run, record.settings)
    _log_files(client, run_id, record, generation)
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id, uri


def _earlier_bench(client, exp_id: str, sha: str) -> str | None:
    runs = client.search_runs([exp_id], filter_string=f"tags.`{BENCH_MODEL_TAG}` = '{sha}' and "
                                                      f"tags.`{KIND_TAG}` = '{KIND_BENCH}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _log_figures(client, run, record: BenchRecord, generation: int, owned: bool) -> None:
    """Metrics that changed, at step ``generation``; the tags of this bench, and none left from an earlier one."""
    from mlflow.entities import Metric, RunTag

    rid = run.info.run_id
    ts = int(time.time() * 1000)
    latest = run.data.metrics
    items = [Metric(k, v, ts, generation) for k, v in record.metrics.items() if latest.get(k) != v]
    # a figure an earlier bench had and this one has not (not measured now, or flagged) must not
    # stand as the newest: NaN marks it absent in the run's latest values
    ours = tuple(f"device.{g}." for g in record.groups)
    items += [Metric(k, float("nan"), ts, generation) for k, v in latest.items()
              if k.startswith(ours) and k not in record.metrics and v == v]
    for i in range(0, len(items), 500):
        client.log_batch(rid, metrics=items[i:i + 500])
    tags = dict(record.tags)
    if not owned:  # the run is someone's (a sweep's trial, a training run): its kind stays what it is
        tags.pop(KIND_TAG, None)
    tags.update({BENCH_GENERATION_TAG: str(generation), BENCH_SETTINGS_TAG: json.dumps(record.settings,
                                                                                        sort_keys=True)})
    for stale in [k for k in run.data.tags if k.startswith("device.") and k not in tags]:
        client.delete_tag(rid, stale)  # e.g. the quality reasons of an earlier bench
    client.log_batch(rid, tags=[RunTag(k, tag_text(v)) for k, v in tags.items()])


def _log_params(client, run, settings: dict[str, Any]) -> None:
    from mlflow.entities import Param

    have = run.data.params
    params = [Param(BENCH_PARAM_PREFIX + k, tag_text(json.dumps(v) if isinstance(v, (list, dict)) else v, 6000))
              for k, v in sorted(settings.items())]
    new = [p for p in params if p.key not in have]
    if new:
        client.log_batch(run.info.run_id, params=new)


def _log_files(client, run_id: str, record: BenchRecord, generation: int) -> None:
    """The agent's JSON (and power trace) per bucket, notes and ``measurement.md`` under ``device/``;
    the JSONs also under ``device/history/<generation>/``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "device"
        hist = root / "history" / str(generation)
        for m in record.measurements:
            if m.result is None:
                continue
            name = f"{m.purpose}_{m.height}x{m.width}"
            for d in (root / m.kind, hist / m.kind):
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{name}.json").write_text(json.dumps(m.result, indent=1))
            trace = m.result.get("trace_local")
            if trace and Path(trace).is_file():  # the agent's raw power samples, beside its JSON
                shutil.copyfile(trace, root / m.kind / f"{name}.trace.csv")
        root.mkdir(parents=True, exist_ok=True)
        if record.notes:
            (root / "notes.txt").write_text("\n".join(record.notes) + "\n")
        (root / "measurement.md").write_text(measurement_markdown(record))
        client.log_artifacts(run_id, str(root), "device")


def measurement_markdown(record: BenchRecord) -> str:
    """The bench as a hardware engineer reads it: per board kind and bucket, the headline figures, their
    spread and quality, the board's state, and the per-rail table (what jtop shows)."""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(record.settings.items()))
    lines = ["# Board measurement", "", f"Settings: {settings}", ""]
    for kind in sorted({m.kind for m in record.measurements}):
        p = f"device.{kind}."
        t = {k[len(p):]: v for k, v in record.tags.items() if k.startswith(p)}
        lines += [f"## {kind}", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace(chr(10), '<br>')} |" for k, v in sorted(t.items())]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted((k[len(p):], v) for k, v in record.metrics.items()
                                                          if k.startswith(p) and not BUCKET.match(k[len(p):]))]
        for m in (x for x in record.measurements if x.kind == kind):
            lines += ["", *_bucket_markdown(m)]
        lines.append("")
    if record.notes:
        lines += ["## Notes", "", *[f"* {n}" for n in record.notes], ""]
    return "\n".join(lines)


def _bucket_markdown(m: Measurement) -> list[str]:
    r = m.result or {}
    head = f"### {m.purpose} {m.height}x{m.width} (share {100 * m.fraction:.1f} %, board {m.board or '-'})"
    if not r:
        return [head, "", f"not measured: {(m.error or {}).get('kind')}: {(m.error or {}).get('message')}"]
    lat = r.get("latency_ms") or {}
    ci = ((r.get("ci95") or {}).get("energy_j_per_image_gross") or {}).get("half_width")
    out = [head, "",
           f"J/image gross {format_value(r.get('energy_j_per_image_gross'))} (± {format_value(ci)} CI95), net "
           f"{format_value(r.get('energy_j_per_image_net'))}; cv {format_value(r.get('cv'))}; latency p50/p90/p99 "
           f"{format_value(lat.get('p50'))}/{format_value(lat.get('p90'))}/{format_value(lat.get('p99'))} ms; "
           f"{format_value(r.get('throughput_ips'))} images/s; idle {format_value(r.get('idle_power_w'))} W; "
           f"quality **{r.get('quality', '-')}**"
           + (" (measured again with more repeats)" if m.remeasured else ""), ""]
    out += [f"* {x.get('level')}: {x.get('code')}: {x.get('detail')}" for x in r.get("reasons") or []]
    rails = r.get("rails") or {}
    if rails:
        out += ["", "| rail | boundary | power W | idle W | J/image | J/image net |", "|---|---|---|---|---|---|"]
        for name, v in sorted(rails.items()):
            out.append(f"| {name} | {v.get('boundary', '-')} | {format_value(v.get('power_w_mean'))} | "
                       f"{format_value(v.get('idle_power_w'))} | {format_value(v.get('energy_j_per_image'))} | "
                       f"{format_value(v.get('energy_j_per_image_net'))} |")
    return out
