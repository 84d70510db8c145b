"""One measurement on a leased board: ship the agent and the model (by hash), run the agent
with a deadline, fetch its JSON, clean the job folder, and turn failures into typed errors.

Board layout under ``workdir``::

    agent/<sha256>.zip      the device_agents package (verified by hash), unpacked once to
    agent/<sha256>/         run with PYTHONPATH=<that folder> (bytecode cached on the board)
    blobs/<sha256>.<ext>    model files, content-addressed (sent once, reused by later jobs)
    jobs/<job id>/          one job's folder (pid, result.json, engine cache): removed afterwards
    board.lock              held (flock) by the running agent: one measurement per board
"""
from __future__ import annotations

import hashlib
import io
import json
import secrets
import shlex
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.boards.errors import AGENT_EXIT_KINDS, BoardError
from orchestrator.boards.inventory import Board, Measure
from orchestrator.boards.transport import Transport
from workers.digest import file_sha256

AGENT_DIR = Path(__file__).resolve().parents[2] / "device_agents"


@dataclass
class Job:
    """A unit of board work. ``kind``: ``measure`` (a model), ``power`` (no workload) or ``probe``.

    ``labels``: the board must carry all of them; ``board``: pin to one board by name.
    ``key``: identity for the journal (same key = same job, never run twice).
    """

    kind: str = "measure"
    model: str | None = None            # local path of the model file
    model_sha256: str | None = None
    runtime: str | None = None          # default: the board's runtime
    input_shape: list[int] | None = None
    train_steps: int = 0
    num_classes: int | None = None
    labels: list[str] = field(default_factory=list)
    board: str | None = None
    measure: dict[str, Any] | None = None   # overrides of the inventory's Measure settings
    deadline_s: float | None = None         # default: the board's job_deadline_s
    meta: dict[str, Any] = field(default_factory=dict)  # carried through untouched (bucket, purpose, …)
    trace: bool = False                     # also fetch the agent's raw power trace (needs a power source)
    key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("measure", "power", "probe"):
            raise ValueError(f"job kind must be measure, power or probe, not {self.kind!r}")
        if self.kind == "measure":
            if not self.model:
                raise ValueError("a measure job needs a model file")
            if self.model_sha256 is None:
                self.model_sha256 = file_sha256(self.model)
        if self.key is None:
            spec = {k: v for k, v in asdict(self).items() if k not in ("key", "model", "meta", "deadline_s")}
            spec["meta"] = self.meta
            self.key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        return cls(**d)


@lru_cache(maxsize=1)
def agent_zip() -> tuple[bytes, str]:
    """The agent package as a deterministic zip (fixed timestamps) and its sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(AGENT_DIR.glob("*.py")):
            info = zipfile.ZipInfo(f"device_agents/{f.name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, f.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def ensure_agent(t: Transport, cache_dir: Path) -> str:
    """The board path of the agent zip (uploaded only if the board lacks this version)."""
    data, sha = agent_zip()
    local = cache_dir / f"agent-{sha[:16]}.zip"
    if not local.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{secrets.token_hex(4)}.tmp")  # pools share this folder
        tmp.write_bytes(data)
        tmp.replace(local)
    remote = f"{t.board.workdir}/agent/{sha}.zip"
    t.put(local, remote, sha)
    # Unpacked once next to the verified zip, so the board's Python caches bytecode
    # (zipimport compiles every module on every start: ~30 ms a job here, more on a TX2).
    unpacked = f"{t.board.workdir}/agent/{sha}"
    marker = f"{unpacked}/device_agents/__init__.py"
    if not t.exists(marker):
        q = shlex.quote
        tmp = f"{unpacked}.tmp{secrets.token_hex(3)}"
        res = t.shell(f"{q(t.board.python)} -m zipfile -e {q(remote)} {q(tmp)} && "
                      f"{{ mv {q(tmp)} {q(unpacked)} 2>/dev/null || rm -rf {q(tmp)}; }}", 120)
        if res.rc != 0 or not t.exists(marker):
            return remote  # run from the zip itself: slower start, same agent
    return unpacked


def _flags(m: Measure) -> list[str]:
    """Window flags; sampling flags only where the inventory sets them (else the agent's sensor rule)."""
    out = ["--duration", f"{m.duration:g}", "--repeats", str(m.repeats)]
    if m.min_samples is not None:
        out += ["--min-samples", str(m.min_samples)]
    if m.interval_ms is not None:
        out += ["--interval-ms", f"{m.interval_ms:g}"]
    return out


def agent_argv(job: Job, board: Board, measure: Measure, model_remote: str | None) -> list[str]:
    """The agent's command line for a job (each item one argv word; quoted by the transport)."""
    base = [board.python, "-m", "device_agents"]
    if job.kind == "probe":
        return base + ["probe", "--fs-root", board.fs_root, "--out", "result.json"]
    trace = ["--trace", "trace.csv"] if job.trace else []
    if job.kind == "power":
        return base + ["power", "--power", board.power, "--fs-root", board.fs_root, *_flags(measure), *trace,
                       "--out", "result.json", "--quiet"]
    runtime = job.runtime or board.runtime
    argv = base + ["measure", "--model", model_remote, "--runtime", runtime, "--power", board.power,
                   "--fs-root", board.fs_root, "--device", board.device, *_flags(measure),
                   "--idle", f"{measure.idle:g}", "--warmup", f"{measure.warmup:g}",
                   "--warmup-iters", str(measure.warmup_iters), "--work-dir", "engines", *trace,
                   "--out", "result.json", "--quiet"]
    if measure.threads:
        argv += ["--threads", str(measure.threads)]
    if job.input_shape:
        argv += ["--input-shape", "x".join(str(int(v)) for v in job.input_shape)]
    if job.train_steps:
        argv += ["--train-steps", str(job.train_steps)]
    if job.num_classes:
        argv += ["--num-classes", str(job.num_classes)]
    return argv + list(measure.extra_args)


def run_job(t: Transport, job: Job, job_id: str, measure: Measure, cache_dir: Path) -> dict[str, Any]:
    """Run one job on a connected transport; returns the agent's JSON (``ok: true``) or raises BoardError."""
    board = t.board
    settings = measure.model_copy(update=job.measure or {})
    t.connect()
    agent = ensure_agent(t, cache_dir)
    if job.kind == "probe":
        sweep_orphans(t)
    model_remote = None
    if job.kind == "measure":
        model_remote = f"{board.workdir}/blobs/{job.model_sha256}{Path(job.model).suffix}"
        if not Path(job.model).is_file():
            raise BoardError("bad_model", board.name, f"model file {job.model} no longer exists on this host")
        t.put(job.model, model_remote, job.model_sha256)
    cwd = f"{board.workdir}/jobs/{job_id}"
    deadline = job.deadline_s or board.job_deadline_s
    argv = agent_argv(job, board, settings, model_remote)
    res = t.run(argv, cwd, deadline, env={"PYTHONPATH": agent})
    parked = f"{cwd}.result.json"  # the job line moved the result here and removed the job folder
    raw = t.read(parked) if not res.timed_out else None
    if res.timed_out:
        raw = t.read(f"{cwd}/result.json")  # the partial JSON a stopped agent wrote
        try:
            t.remove(cwd)
        except BoardError:
            pass
    t.remove_file(parked)
    trace_raw = None
    if job.trace:
        trace_raw = t.read(f"{cwd}.trace.csv")
        t.remove_file(f"{cwd}.trace.csv")
    doc = None
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
    if res.timed_out:
        raise BoardError("timeout", board.name, f"job {job_id} ran past its {deadline:g} s deadline; "
                         f"the agent's process group was stopped{_stderr_tail(res.stderr)}")
    if res.rc == 75:
        raise BoardError("timeout", board.name, f"board lock {t.lock_path} stayed held for {deadline:g} s")
    if res.rc == 0 and doc and doc.get("ok"):
        # throttling during a window, or a window the agent's thermal gate let start while hot
        throttle = [w for w in doc.get("warnings", []) if w.startswith(("thermal throttling", "thermal gate"))]
        if throttle:
            raise BoardError("thermal", board.name, "; ".join(throttle))
        if trace_raw is not None:
            # kept on this host (the journal holds the JSON only); the path travels in the result
            local = cache_dir.parent / "traces" / f"{job_id}.csv"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(trace_raw)
            doc["trace_local"] = str(local)
        return doc
    if doc and doc.get("ok") is False:
        kind = doc.get("error_kind")
        kind = {"workload_failed": "agent_crash", "internal": "agent_crash", "interrupted": "timeout"}.get(kind, kind)
        raise BoardError(kind or AGENT_EXIT_KINDS.get(res.rc or 1, "agent_crash"), board.name,
                         f"agent exit {res.rc}: {doc.get('error')}")
    if res.rc == 127:
        raise BoardError("missing_runtime", board.name,
                         f"{board.python} or flock not found on the board{_stderr_tail(res.stderr)}")
    raise BoardError("agent_crash", board.name, f"agent ended with exit {res.rc} and no JSON result"
                     f"{_stderr_tail(res.stderr)}")


#: a job's files on a board older than this belong to an orchestrator that died mid-job
ORPHAN_AGE_MIN = 24 * 60


def sweep_orphans(t: Transport) -> None:
    """Remove job folders and parked results that outlived their orchestrator (older than a day); a
    probe does it, so a board never fills up with the leftovers of killed benches."""
    jobs = shlex.quote(f"{t.board.workdir}/jobs")
    t.shell(f"[ -d {jobs} ] && find {jobs} -mindepth 1 -maxdepth 1 -mmin +{ORPHAN_AGE_MIN} -exec rm -rf -- {{}} + "
            "2>/dev/null; true", 60)


def _stderr_tail(text: str) -> str:
    text = (text or "").strip()
    return f"; stderr: …{text[-400:]}" if text else ""
