"""Figures of issue 18 (board measurements a hardware engineer would trust), on emulated boards.

    .venv/bin/python benchmarks/bench_board_trust.py [--quick]

1. Energy error per repeat against the emulated waveform (a TX2 tree whose INA3221 publishes
   every 0.42 s, written by a separate process), with the windows the agent sizes itself (what
   `dance bench` now passes: no sampling flags) against the forced `--interval-ms 10
   --min-samples 50` of the old inventory defaults, both at the 1.5 s / 2 repeats of the
   issue's example. The agent's command line is built by `orchestrator.boards.agentjob.agent_argv`,
   the code path `dance bench` uses.
2. How often the quality gate re-measures: fresh benches of a small model on two emulated
   boards (TX2 and AGX Orin trees) with the inventory's default protocol.
3. Bench wall time with one of three board kinds dead (nothing listening on its port): the
   two live kinds must be measured; beside it, the same bench without the dead kind.

Nothing is hard-coded: every figure is measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_agents import emulate  # noqa: E402
from orchestrator.boards.agentjob import Job, agent_argv  # noqa: E402
from orchestrator.boards.bench import run_bench  # noqa: E402
from orchestrator.boards.inventory import Board, Inventory, Measure  # noqa: E402

WAVEFORM = {"base_w": 6.0, "sines": [{"amp_w": 1.0, "freq_hz": 1.0}, {"amp_w": 0.5, "freq_hz": 1.0 / 0.3}],
            "square": {"amp_w": 2.0, "period_s": 1.5, "duty": 0.4}}
REFRESH_S = 0.42


def energy_errors(work: Path, measure: Measure) -> dict:
    """Per-repeat energy error (%) of a `power` job built as `dance bench` builds it."""
    root = work / "tx2"
    proc, wf = emulate.start_writer(str(root), "tx2", dict(WAVEFORM), refresh_s=REFRESH_S)
    try:
        board = Board(name="tx2", transport="local", fs_root=str(root), workdir=str(work / "agent"))
        argv = agent_argv(Job(kind="power"), board, measure, None)
        out = work / "power.json"
        argv = [a if a != "result.json" else str(out) for a in argv]
        subprocess.run(argv, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(REFRESH_S + 0.1)  # the value covering a window's end is published at the next refresh
        doc = json.loads(out.read_text())
    finally:
        emulate.stop_writer(proc)
    errs = [(r["energy_j_gross"] - wf.energy(r["t_start_monotonic"], r["t_end_monotonic"]))
            / wf.energy(r["t_start_monotonic"], r["t_end_monotonic"]) * 100.0 for r in doc["repeats"]]
    return {"windows_sized_by": doc["settings"]["windows_sized_by"],
            "window_s": [round(r["duration_s"], 2) for r in doc["repeats"]],
            "sensor_updates": [r.get("sensor_updates") for r in doc["repeats"]],
            "error_pct": [round(e, 2) for e in errs], "max_abs_error_pct": max(abs(e) for e in errs),
            "quality": doc.get("quality")}


def _checkpoint(work: Path) -> Path:
    from workers.checkpoint import save_checkpoint
    from workers.models import build_model

    ck = work / "model.pt"
    save_checkpoint(ck, build_model("bisenet", num_classes=3, variant="small").eval())
    return ck


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _boards(work: Path, dead: bool) -> list[Board]:
    out = [Board(name=layout, transport="local", fs_root=str(work / layout), workdir=str(work / f"agent-{layout}"),
                 labels=[layout]) for layout in ("tx2", "orin")]
    if dead:
        key = work / "unused_key"
        key.write_text("x")
        out.append(Board(name="nx", transport="ssh", host="127.0.0.1", port=_closed_port(), user="nobody",
                         key_file=key, labels=["nx"], connect_timeout_s=2))
    return out


def quality_gate_and_dead_kind(work: Path, benches: int, measure: Measure) -> dict:
    writers = [emulate.start_writer(str(work / layout), layout, dict(WAVEFORM), refresh_s=REFRESH_S)[0]
               for layout in ("tx2", "orin")]
    ck = _checkpoint(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    quiet = lambda s: None  # noqa: E731
    try:
        jobs = again = 0
        qualities: list[str] = []
        for i in range(benches):
            inv = Inventory(known_hosts=work / "kh", measure=measure, boards=_boards(work, dead=False))
            r = run_bench(str(ck), inv, fresh=True, buckets="64x128", tracking_uri=uri, use_ray=False,
                          cache_path=work / f"cache{i}.sqlite", journal=work / f"journal{i}.sqlite", log=quiet)
            jobs += r.jobs_run - r.remeasured
            again += r.remeasured
            qualities += [m.quality or "-" for m in r.measurements]
        timings = {}
        for dead in (False, True):
            inv = Inventory(known_hosts=work / "kh", measure=measure, boards=_boards(work, dead))
            t0 = time.perf_counter()
            r = run_bench(str(ck), inv, fresh=True, buckets="64x128", tracking_uri=uri, use_ray=False,
                          cache_path=work / f"cache-d{dead}.sqlite", journal=work / f"journal-d{dead}.sqlite",
                          log=quiet)
            timings["one of three kinds dead" if dead else "the two live kinds alone"] = {
                "wall_s": round(time.perf_counter() - t0, 1), "status": r.status,
                "measured": sorted({m.kind for m in r.measurements if m.result}), "unmeasured": sorted(r.unmeasured)}
    finally:
        for w in writers:
            emulate.stop_writer(w)
    return {"gate": {"measurements": jobs, "remeasured": again,
                     "remeasure_rate_pct": round(100.0 * again / jobs, 1) if jobs else None,
                     "qualities": {q: qualities.count(q) for q in sorted(set(qualities))}},
            "dead_kind": timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer benches (the figures are noisier)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trust-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                     else None) as tmp:
        work = Path(tmp)
        example = {"duration": 1.5, "repeats": 2, "idle": 0.0}
        print("== 1. energy error per repeat, 1.5 s / 2 repeats, TX2 INA3221 at 0.42 s")
        for name, m in (("agent sizes its windows (dance bench now)", Measure(**example)),
                        ("forced --interval-ms 10 --min-samples 50 (old defaults)",
                         Measure(**example, interval_ms=10, min_samples=50))):
            (work / name[:5]).mkdir()
            print(f"  {name}: {json.dumps(energy_errors(work / name[:5], m))}")
        n = 2 if args.quick else 4
        print(f"== 2./3. quality gate over {n} fresh benches on 2 emulated boards (inventory defaults, idle 1 s), "
              "and a bench with one of three kinds dead")
        res = quality_gate_and_dead_kind(work, n, Measure(idle=1.0, warmup=1.0))
        print(f"  quality gate: {json.dumps(res['gate'])}")
        for k, v in res["dead_kind"].items():
            print(f"  {k}: {json.dumps(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
