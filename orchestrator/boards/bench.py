"""``dance bench``: checkpoint → export per resolution bucket → boards → expected J/image → MLflow.

Boards with the same label set are one *board group* (:class:`~.inventory.BoardGroup`,
interchangeable hardware): each bucket is measured once per group, on whichever of its boards
is free, so a board that drops hands its jobs to its twin. Metrics are named after the group
(``device.<group>.*``): the board's name when the group has one board, else its labels joined
by ``+``. :func:`run_bench` runs four phases: probe the boards, plan one job per (group,
purpose, bucket), run what the cache does not answer, summarise into figures and log them.

Expected energy per image on a kind = Σ_k fraction_k · J_k over the export manifest's buckets
(the dataset's bucket distribution) + the cost of scoring Eq. 1 at the stored image sizes
(when the checkpoint's config has CAD on and its dataset is on this machine). Figures that
were not measured are absent, never 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from orchestrator.boards.agentjob import Job
from orchestrator.boards.cache import DEFAULT_PATH as DEFAULT_CACHE
from orchestrator.boards.cache import MeasurementCache, board_facts, cache_key
from orchestrator.boards.inventory import Board, BoardGroup, Inventory, board_address, board_groups
from orchestrator.boards.pool import BoardPool, LocalPoolClient, PoolClientLike, start_pool_actor
from orchestrator.boards.scoring import build_scoring_onnx, stored_sizes
from orchestrator.boards.transport import sha256_file
from orchestrator.checkpoints import resolve_target
from orchestrator.errors import UserError
from orchestrator.runs.schema import BENCH_CHECKPOINT_TAG, KIND_BENCH, KIND_TAG, tag_text
from orchestrator.runs.tracking import resolve_tracking_uri, setup
from orchestrator.training import ensure_ray
from workers.features import TRAIN_STEP_BATCH, checkpoint_features

# torch (through workers.export, workers.checkpoint, workers.features) and mlflow load inside the
# functions that use them: `dance boards` and `dance bench --help` import this module.

DEFAULT_JOURNAL = Path(".dance/board-journal.sqlite")
DEFAULT_EXPORTS = Path(".dance/bench")
FORMAT_OF = {"onnxruntime": "onnx", "trtexec": "onnx", "torchscript": "torchscript"}
#: torch.onnx.export keeps global state ("in ONNX export"): a sweep measuring trials from
#: several threads exports, traces and counts FLOPs one model at a time
TORCH_LOCK = threading.RLock()


@dataclass
class Measurement:
    kind: str
    purpose: str          # infer | train | score
    height: int
    width: int
    fraction: float
    result: dict[str, Any] | None = None
    board: str | None = None
    cached: bool = False
    error: dict[str, Any] | None = None
    features: dict[str, Any] | None = None   # what the cost model sees (FLOPs, parameter bytes, pixels)


@dataclass
class BenchResult:
    run_id: str | None
    tracking_uri: str | None
    metrics: dict[str, float]
    tags: dict[str, str]
    measurements: list[Measurement]
    boards_contacted: bool
    jobs_run: int
    seconds: float
    notes: list[str] = field(default_factory=list)


# -- the checkpoint ------------------------------------------------------------------------------------------------
def export_for(ckpt: Path, fmt: str, buckets_arg: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Export (or reuse the export of) this checkpoint; returns the manifest with absolute file paths."""
    from workers.checkpoint import CheckpointError
    from workers.export import ExportError, export_checkpoint, parse_buckets

    sha = sha256_file(ckpt)
    tag = hashlib.sha256(f"{sha}|{fmt}|{buckets_arg}".encode()).hexdigest()[:16]
    out = DEFAULT_EXPORTS / "exports" / tag
    man_path = out / "manifest.json"
    with TORCH_LOCK:
        if not man_path.is_file():
            try:
                buckets = parse_buckets(buckets_arg) if buckets_arg else None
                with tempfile.TemporaryDirectory(dir=DEFAULT_EXPORTS.as_posix() if DEFAULT_EXPORTS.exists()
                                                 else None) as tmp:
                    export_checkpoint(ckpt, tmp, fmt, buckets, log=log)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Path(tmp).rename(out)  # whole export appears at once: a crash never leaves half a manifest
            except (CheckpointError, ExportError) as exc:
                raise UserError(str(exc)) from None
        else:
            log(f"  reusing the {fmt} export in {out}")
    man = json.loads(man_path.read_text())
    for b in man["buckets"]:
        b["path"] = str((out / b["file"]).resolve())
    man["dir"] = str(out.resolve())
    return man


# -- the figures ---------------------------------------------------------------------------------------------------
def _mix_quantile(parts: list[tuple[float, dict[str, Any]]], q: float) -> float | None:
    """Quantile q of a mixture of per-bucket latency distributions, each known by its min, p50, p90,
    p99 and max (piecewise-linear CDF through them); solved by bisection. None if any is missing."""
    cdfs = []
    for frac, lat in parts:
        pts = [(lat.get("min"), 0.0), (lat.get("p50"), 0.5), (lat.get("p90"), 0.9), (lat.get("p99"), 0.99),
               (lat.get("max"), 1.0)]
        pts = [(x, p) for x, p in pts if x is not None]
        if len(pts) < 2:
            return None
        pts.sort()
        cdfs.append((frac, pts))

    def cdf(x: float) -> float:
        total = 0.0
        for frac, pts in cdfs:
            if x <= pts[0][0]:
                v = 0.0
            elif x >= pts[-1][0]:
                v = 1.0
            else:
                v = 0.0
                for (x0, p0), (x1, p1) in zip(pts, pts[1:]):
                    if x0 <= x <= x1:
                        v = p0 if x1 == x0 else p0 + (p1 - p0) * (x - x0) / (x1 - x0)
                        break
            total += frac * v
        return total

    lo = min(p[0][0] for _, p in cdfs)
    hi = max(p[-1][0] for _, p in cdfs)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


def _weighted(ms: list[Measurement], key: str) -> float | None:
    """Σ fraction · value over buckets (fractions normalised); None unless every bucket has a value."""
    vals = [(m.fraction, (m.result or {}).get(key)) for m in ms]
    if not vals or any(v is None for _, v in vals):
        return None
    total = sum(f for f, _ in vals)
    return sum(f * v for f, v in vals) / total if total > 0 else None


def figures(kind: str, ms: list[Measurement]) -> dict[str, float]:
    """The metrics of one kind; a figure nothing measured is left out."""
    infer = [m for m in ms if m.purpose == "infer"]
    train = [m for m in ms if m.purpose == "train"]
    score = [m for m in ms if m.purpose == "score"]
    out: dict[str, float | None] = {}
    p = f"device.{kind}."
    j_net = _weighted(infer, "energy_j_per_image_gross")
    j_score = _weighted(score, "energy_j_per_image_gross") if score else 0.0
    out[p + "energy_j_per_image"] = None if j_net is None or j_score is None else j_net + j_score
    out[p + "network_energy_j_per_image"] = j_net
    if score:
        out[p + "scoring_energy_j_per_image"] = j_score
    jn = _weighted(infer, "energy_j_per_image_net")
    jsn = _weighted(score, "energy_j_per_image_net") if score else 0.0
    out[p + "energy_j_per_image_net"] = None if jn is None or jsn is None else jn + jsn
    if infer and all(m.result for m in infer):
        parts = [(m.fraction, m.result.get("latency_ms") or {}) for m in infer]
        out[p + "latency_ms_p50"] = _mix_quantile(parts, 0.5)
        out[p + "latency_ms_p90"] = _mix_quantile(parts, 0.9)
    if train:
        out[p + "train_energy_j_per_step"] = _weighted(train, "energy_j_per_step_gross")
    for m in infer:
        lat = (m.result or {}).get("latency_ms") or {}
        b = f"{p}b{m.height}x{m.width}."
        out[b + "energy_j_per_image"] = (m.result or {}).get("energy_j_per_image_gross")
        out[b + "latency_ms_p50"] = lat.get("p50")
        out[b + "latency_ms_p90"] = lat.get("p90")
    return {k: float(v) for k, v in out.items() if v is not None}


# -- the command ---------------------------------------------------------------------------------------------------
@dataclass
class ModelFiles:
    """What is measured: the exports of the checkpoint per format and the Eq. 1 scoring sizes."""

    manifests: dict[str, dict[str, Any]]
    num_classes: int | None
    score_sizes: list[tuple[int, int, float]] | None


@dataclass
class PlannedJob:
    """One measurement the cache did not answer: its figures' slot, the agent job and its board group."""

    measurement: Measurement
    job: Job
    group: BoardGroup


class _PoolHandle:
    """The board pool of one bench: the caller's, or started on first use (and then closed by the bench)."""

    def __init__(self, pool: PoolClientLike | None, inventory: Inventory, journal: str | Path, use_ray: bool) -> None:
        self.pool, self.owned = pool, pool is None
        self.inventory, self.journal, self.use_ray = inventory, journal, use_ray
        self.contacted = False

    def get(self) -> PoolClientLike:
        self.contacted = True
        if self.pool is None:
            if self.use_ray:
                ensure_ray()
                self.pool = start_pool_actor(self.inventory, self.journal)
            else:
                self.pool = LocalPoolClient(BoardPool(self.inventory, self.journal))
        return self.pool

    def close(self) -> None:
        if self.owned and self.pool is not None:
            self.pool.close()


def run_bench(target: str, inventory: Inventory, *, labels: list[str] | None = None, fresh: bool = False,
              buckets: str | None = None, train_steps: int = 0, tracking_uri: str | None = None,
              experiment: str = "dance-bench", journal: str | Path = DEFAULT_JOURNAL,
              cache_path: str | Path = DEFAULT_CACHE, use_ray: bool = True, pool: PoolClientLike | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> BenchResult:
    """Measure ``target`` (checkpoint or run id) on the matching boards and log the figures.

    ``pool``: a running pool client (a sweep shares one across its trials); it is used, not
    closed. Without it the bench starts its own (a Ray actor, or threads with ``use_ray=False``).
    """
    t_start = time.monotonic()
    boards = inventory.matching(labels)
    if not boards:
        raise UserError(f"{inventory.source}: no board carries labels {labels} "
                        f"(boards: {', '.join(f'{b.name} {b.labels}' for b in inventory.boards)})")
    groups = board_groups(boards)
    ckpt, run_id = resolve_target(target, tracking_uri, DEFAULT_EXPORTS / "runs")
    log(f"dance bench: {ckpt} on {len(boards)} board(s) in {len(groups)} kind(s): "
        + ", ".join(f"{g.name} [{', '.join(b.name for b in g.boards)}]" for g in groups))
    notes: list[str] = []
    files = _model_files(ckpt, boards, buckets, train_steps, notes, log)
    handle = _PoolHandle(pool, inventory, journal, use_ray)
    cache = MeasurementCache(cache_path)
    try:
        probes, groups = _probe(boards, groups, cache, handle, fresh, notes, log)
        facts = {b.name: board_facts(probes[b.name], b.runtime) for b in boards if b.name in probes}
        measurements, todo = _plan(groups, files, train_steps, facts, probes, cache, fresh, log)
        jobs_run = _measure(todo, ckpt, handle, cache, facts, log)
    finally:
        handle.close()
        cache.close()
    metrics, tags = _summarise(groups, measurements, facts, ckpt, notes)
    run_id, uri = _log_mlflow(run_id, ckpt, metrics, tags, measurements, tracking_uri, experiment, notes)
    return BenchResult(run_id, uri, metrics, tags, measurements, handle.contacted, jobs_run,
                       time.monotonic() - t_start, notes)


def _model_files(ckpt: Path, boards: list[Board], buckets: str | None, train_steps: int, notes: list[str],
                 log: Callable[[str], None]) -> ModelFiles:
    """Export the checkpoint in every format the boards run (TorchScript too for training steps)."""
    from workers.checkpoint import read_checkpoint

    formats = sorted({FORMAT_OF[b.runtime] for b in boards} | ({"torchscript"} if train_steps else set()))
    manifests = {fmt: export_for(ckpt, fmt, buckets, log) for fmt in formats}
    try:
        config = (read_checkpoint(ckpt).get("extra") or {}).get("config")
    except Exception:
        config = None
    man0 = next(iter(manifests.values()))
    score_sizes = stored_sizes(config) if man0.get("cdf") else None
    if score_sizes is None:
        notes.append("scoring cost (Eq. 1) not counted: the checkpoint's config has no CAD or its dataset "
                     "is not on this machine")
    return ModelFiles(manifests, man0.get("num_classes"), score_sizes)


def _probe(boards: list[Board], groups: list[BoardGroup], cache: MeasurementCache, handle: _PoolHandle,
           fresh: bool, notes: list[str], log: Callable[[str], None]) -> tuple[dict, list[BoardGroup]]:
    """Board facts (from the cache unless ``fresh``); the groups keep the boards that answered.

    A board that does not answer is left to its twins; a group none of whose boards answers fails.
    """
    probes: dict[str, dict[str, Any]] = {}
    need = []
    for b in boards:
        f = None if fresh else cache.facts(board_address(b))
        if f is None:
            need.append(b)
        else:
            probes[b.name] = f
    if not need:
        return probes, groups
    # a probe is not cached by the journal across benches: --fresh must really probe again
    nonce = f"{time.time_ns()}" if fresh else None
    ids = handle.get().submit([Job(kind="probe", board=b.name, meta={"probe": board_address(b), "nonce": nonce})
                               for b in need])
    for b, out in zip(need, _wait_with_progress(handle.get(), ids, log)):
        if out["state"] != "done":
            err = out["error"] or {}
            why = f"board {b.name}: probe failed: {err.get('kind')}: {err.get('message')}"
            twins = [t for g in groups if b in g.boards for t in g.boards if t is not b]
            if not any(t.name in probes or t in need for t in twins):
                raise UserError(why)
            notes.append(why + " (its twins measure instead)")
            continue
        probes[b.name] = out["result"]
        cache.put_facts(board_address(b), b.name, out["result"])
    groups = [BoardGroup(g.name, g.labels, [b for b in g.boards if b.name in probes]) for g in groups]
    lost = [g.name for g in groups if not g.boards]
    if lost:
        raise UserError(f"no board of kind {', '.join(lost)} answered its probe")
    return probes, groups


def _bucket_specs(group: BoardGroup, files: ModelFiles, train_steps: int) -> list[tuple]:
    """(purpose, h, w, share, model file, runtime, train steps, input shape) of every job of one group."""
    rt = group.first.runtime
    plan = [("infer", files.manifests[FORMAT_OF[rt]], rt, 0)]
    if train_steps:
        plan.append(("train", files.manifests["torchscript"], "torchscript", train_steps))
    specs = []
    for purpose, man, runtime, steps in plan:
        for bk in man["buckets"]:
            shape = [TRAIN_STEP_BATCH if steps else 1, 3, bk["height"], bk["width"]]
            specs.append((purpose, bk["height"], bk["width"], bk["fraction"], bk["path"], runtime, steps, shape))
    for h, w, frac in files.score_sizes or []:
        specs.append(("score", h, w, frac, str(_scoring_model(h, w).resolve()),
                      "onnxruntime" if rt == "torchscript" else rt, 0, [1, 3, h, w]))
    return specs


def _scoring_model(h: int, w: int) -> Path:
    """The Eq. 1 scoring network at one stored size, as ONNX (built once; a sweep measures trials side by side)."""
    path = DEFAULT_EXPORTS / "scoring" / f"eq1_{h}x{w}.onnx"
    with TORCH_LOCK:
        if not path.is_file():
            part = path.with_name(f".{path.name}.{os.getpid()}.part")
            build_scoring_onnx(part, h, w)
            os.replace(part, path)  # appears whole
    return path


def _plan(groups: list[BoardGroup], files: ModelFiles, train_steps: int, facts: dict, probes: dict,
          cache: MeasurementCache, fresh: bool, log: Callable[[str], None]
          ) -> tuple[list[Measurement], list[PlannedJob]]:
    """One measurement per (group, purpose, bucket); those the cache answers are filled in, the rest planned."""
    measurements: list[Measurement] = []
    todo: list[PlannedJob] = []
    for g in groups:
        for purpose, h, w, frac, path, runtime, steps, shape in _bucket_specs(g, files, train_steps):
            m = Measurement(g.name, purpose, h, w, frac)
            measurements.append(m)
            sha = sha256_file(path)
            key, _ = cache_key(sha, shape, runtime, steps, g.first.device, facts[g.first.name], g.first.power)
            hit = None if fresh else cache.get(key)
            if hit is not None:
                m.result, m.board, m.cached = hit["result"], hit["board"], True
                m.features = hit.get("features")
                log(f"  cached   {g.name:<14} {purpose:<5} {h}x{w}")
                continue
            nonce = f"{time.time_ns()}" if fresh else None
            has_power = g.first.power != "none" and (g.first.power != "auto" or
                                                     probes[g.first.name].get("power_auto") not in (None, "none"))
            job = Job(model=path, model_sha256=sha, runtime=runtime, trace=has_power,
                      input_shape=shape if steps or purpose == "score" else None, train_steps=steps,
                      num_classes=files.num_classes if steps else None, labels=g.labels,
                      board=g.first.name if not g.labels else None,
                      meta={"kind": g.name, "purpose": purpose, "bucket": f"{h}x{w}", "nonce": nonce})
            todo.append(PlannedJob(m, job, g))
    return measurements, todo


def _measure(todo: list[PlannedJob], ckpt: Path, handle: _PoolHandle, cache: MeasurementCache, facts: dict,
             log: Callable[[str], None]) -> int:
    """Run the planned jobs on the pool; each result fills its measurement and the cache. Returns jobs run."""
    if not todo:
        return 0
    feats = _features(ckpt, [t.measurement for t in todo], log)
    for t in todo:
        m = t.measurement
        m.features = feats.get((m.purpose, m.height, m.width))
    ids = handle.get().submit([t.job for t in todo])
    for t, out in zip(todo, _wait_with_progress(handle.get(), ids, log)):
        m, job, g = t.measurement, t.job, t.group
        m.board = out["board"]
        if out["state"] != "done":
            m.error = out["error"]
            continue
        m.result = out["result"]
        f = facts.get(m.board) or facts[g.first.name]
        key, parts = cache_key(job.model_sha256, job.input_shape or _shape_of(m), job.runtime, job.train_steps,
                               g.first.device, f, g.first.power)
        cache.put(key, parts, {"result": m.result, "board": m.board, "features": m.features}, m.board)
    return len(todo)


def _summarise(groups: list[BoardGroup], measurements: list[Measurement], facts: dict, ckpt: Path,
               notes: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Each group's figures (metrics) and what it ran on (tags); a bucket not measured becomes a note."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {KIND_TAG: KIND_BENCH, BENCH_CHECKPOINT_TAG: str(ckpt.resolve())}
    for g in groups:
        ms = [m for m in measurements if m.kind == g.name]
        metrics.update(figures(g.name, ms))
        f = facts[g.first.name]
        ran = sorted({m.board for m in ms if m.board})
        p = f"device.{g.name}."
        tags.update({p + "board": ",".join(ran or [b.name for b in g.boards]),
                     p + "board_model": str(f.get("board_model")),
                     p + "l4t": str(f.get("l4t")),
                     p + "power_mode": str(f.get("power_mode")),
                     p + "tensorrt": str(f.get("tensorrt")),
                     p + "runtime": g.first.runtime,
                     p + "power_source": str(next((m.result.get("power_source") for m in ms if m.result), None))})
        for m in ms:
            if m.error:
                notes.append(f"{g.name} {m.purpose} {m.height}x{m.width}: not measured ({m.error.get('kind')}: "
                             f"{m.error.get('message')})")
    return metrics, tags


def _features(ckpt: Path, ms: list[Measurement], log: Callable[[str], None]) -> dict:
    """Cost-model features of the network buckets about to be measured (none for Eq. 1 scoring)."""
    sizes = sorted({(m.purpose, m.height, m.width) for m in ms if m.purpose in ("infer", "train")})
    if not sizes:
        return {}
    try:
        with TORCH_LOCK:
            return checkpoint_features(ckpt, sizes)
    except Exception as exc:  # the measurement is still worth having without them
        log(f"  cost-model features not recorded: {exc.__class__.__name__}: {exc}")
        return {}


def _shape_of(m: Measurement) -> list[int]:
    return [1, 3, m.height, m.width]


def _wait_with_progress(pool, ids: list[str], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Wait for the jobs, printing one line per job as it starts, retries, finishes or fails."""
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}
    cursor = 0
    n = len(ids)
    while pending:
        events, cursor = pool.events(cursor)
        for ev in events:
            jid = ev.get("job")
            if jid not in pending and ev["event"] != "offline":
                continue
            meta = ev.get("meta") or {}
            what = f"{meta.get('kind', '')} {meta.get('purpose', 'probe')} {meta.get('bucket', '')}".strip()
            if ev["event"] == "start":
                log(f"  [{len(done) + 1}/{n}] {ev['board']}: {what} started (attempt {ev.get('attempt', 1)})")
            elif ev["event"] == "retry":
                log(f"  [{len(done) + 1}/{n}] {ev['board']}: {ev.get('kind')}: {ev['message'][:200]} (will retry)")
            elif ev["event"] == "offline":
                log(f"  board {ev['board']} is OFFLINE: {ev['message'][:200]}")
        finished = pool.finished(sorted(pending))
        for jid, out in finished.items():
            pending.discard(jid)
            done[jid] = out
            meta = out.get("meta") or {}
            what = f"{meta.get('kind', '')} {meta.get('purpose', 'probe')} {meta.get('bucket', '')}".strip()
            if out["state"] == "done":
                r = out["result"] or {}
                lat = (r.get("latency_ms") or {}).get("p50")
                e = r.get("energy_j_per_image_gross")
                extra = (f"  p50 {lat:.2f} ms" if lat is not None else "") + (
                    f", {e:.4g} J/image" if e is not None
                    else (", energy null" if "energy_j_per_image_gross" in r else ""))
                log(f"  [{len(done)}/{n}] {out['board']}: {what} done{extra}")
            else:
                err = out["error"] or {}
                log(f"  [{len(done)}/{n}] {out['board'] or '-'}: {what} FAILED: "
                    f"{err.get('kind')}: {err.get('message')}")
        if pending:
            time.sleep(0.2)
    return [done[i] for i in ids]


def _log_mlflow(run_id, ckpt, metrics, tags, measurements, tracking_uri, experiment, notes):
    import mlflow
    from mlflow.entities import Metric, RunTag

    uri = resolve_tracking_uri(tracking_uri)
    exp_id = setup(uri, experiment)
    client = mlflow.MlflowClient()
    new = run_id is None
    if new:
        run_id = client.create_run(exp_id, run_name=f"bench-{ckpt.parent.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                   tags={KIND_TAG: KIND_BENCH}).info.run_id
    if not new:  # the run is someone's (a sweep's trial, a training run): its kind stays what it is
        tags = {k: v for k, v in tags.items() if k != KIND_TAG}
    ts = int(time.time() * 1000)
    items = [Metric(k, v, ts, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])
    client.log_batch(run_id, tags=[RunTag(k, tag_text(v)) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "device"
        for m in measurements:
            if m.result is None:
                continue
            d = root / m.kind
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{m.purpose}_{m.height}x{m.width}.json").write_text(json.dumps(m.result, indent=1))
            trace = m.result.get("trace_local")
            if trace and Path(trace).is_file():  # the agent's raw power samples, beside its JSON
                shutil.copyfile(trace, d / f"{m.purpose}_{m.height}x{m.width}.trace.csv")
        if notes:
            root.mkdir(parents=True, exist_ok=True)
            (root / "notes.txt").write_text("\n".join(notes) + "\n")
        if root.exists():
            client.log_artifacts(run_id, str(root), "device")
    if new:
        client.set_terminated(run_id, "FINISHED")
    return run_id, uri


def table(result: BenchResult) -> str:
    """The terminal table: one row per bucket and board kind, then the expected figures per kind."""
    rows = [("kind", "purpose", "bucket", "share", "board", "p50 ms", "p90 ms", "J/image", "J/step", "source")]

    def fmt(v, f="{:.4g}"):
        return "-" if v is None else f.format(v)

    for m in result.measurements:
        r = m.result or {}
        lat = r.get("latency_ms") or {}
        src = "cache" if m.cached else ("FAILED " + str((m.error or {}).get("kind")) if m.error else "measured")
        rows.append((m.kind, m.purpose, f"{m.height}x{m.width}", f"{100 * m.fraction:.1f}%", m.board or "-",
                     fmt(lat.get("p50"), "{:.2f}"), fmt(lat.get("p90"), "{:.2f}"),
                     fmt(r.get("energy_j_per_image_gross")), fmt(r.get("energy_j_per_step_gross")), src))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    kinds = sorted({m.kind for m in result.measurements})
    lines.append("")
    for k in kinds:
        p = f"device.{k}."
        g = result.metrics.get
        lines.append(f"{k}: expected {fmt(g(p + 'energy_j_per_image'))} J/image (scoring included: "
                     f"{'yes' if p + 'scoring_energy_j_per_image' in result.metrics else 'no'}), "
                     f"p50 {fmt(g(p + 'latency_ms_p50'), '{:.2f}')} ms, "
                     f"p90 {fmt(g(p + 'latency_ms_p90'), '{:.2f}')} ms, "
                     f"train {fmt(g(p + 'train_energy_j_per_step'))} J/step")
    return "\n".join(lines)
