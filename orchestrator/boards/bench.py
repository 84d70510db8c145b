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
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from orchestrator.boards.agentjob import Job, agent_zip
from orchestrator.boards.benchlog import BenchRecord, log_bench
from orchestrator.boards.cache import DEFAULT_PATH as DEFAULT_CACHE
from orchestrator.boards.cache import MeasurementCache, board_facts, cache_key
from orchestrator.boards.figures import Measurement, figures, group_quality
from orchestrator.boards.inventory import Board, BoardGroup, Inventory, board_address, board_groups
from orchestrator.boards.pool import BOARD_FATAL, BoardPool, LocalPoolClient, PoolClientLike, start_pool_actor
from orchestrator.boards.scoring import build_scoring_onnx, stored_sizes
from orchestrator.checkpoints import resolve_target
from orchestrator.errors import UserError
from orchestrator.runs.schema import BENCH_CHECKPOINT_TAG, KIND_BENCH, KIND_TAG
from orchestrator.training import ensure_ray
from workers.digest import file_sha256
from workers.features import TRAIN_STEP_BATCH, checkpoint_features

# torch (through workers.export, workers.checkpoint) loads inside the functions that use it:
# `dance boards` and `dance bench --help` import this module.

DEFAULT_JOURNAL = Path(".dance/board-journal.sqlite")
DEFAULT_EXPORTS = Path(".dance/bench")
FORMAT_OF = {"onnxruntime": "onnx", "trtexec": "onnx", "torchscript": "torchscript"}
#: torch.onnx.export keeps global state ("in ONNX export"): a sweep measuring trials from
#: several threads exports, traces and counts FLOPs one model at a time
TORCH_LOCK = threading.RLock()


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
    unmeasured: dict[str, str] = field(default_factory=dict)  # board group -> why none of its boards measured
    quality: dict[str, str] = field(default_factory=dict)     # board group -> ok | warn | fail
    remeasured: int = 0                                       # jobs the quality gate ran again

    @property
    def status(self) -> str:
        """``complete`` (every group, every bucket), ``partial`` or ``none`` (nothing measured)."""
        if not any(m.result for m in self.measurements):
            return "none"
        if self.unmeasured or any(m.result is None for m in self.measurements):
            return "partial"
        return "complete"


# -- the checkpoint ------------------------------------------------------------------------------------------------
def export_for(ckpt: Path, fmt: str, buckets_arg: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Export (or reuse the export of) this checkpoint; returns the manifest with absolute file paths."""
    from workers.checkpoint import CheckpointError
    from workers.export import ExportError, export_checkpoint, parse_buckets

    sha = file_sha256(ckpt)
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


@dataclass
class BenchContext:
    """What every phase of one bench needs: the settings the boards measure with and where things go."""

    cache: MeasurementCache
    pool: _PoolHandle
    fresh: bool
    log: Callable[[str], None]
    settings: dict[str, Any]   # the agent's protocol settings as passed (unset ones left to the agent)
    agent: str                 # the agent's version: the hash of its code

    def key(self, sha: str, shape: list[int] | None, runtime: str, steps: int, group: BoardGroup,
            facts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return cache_key(sha, shape, runtime, steps, group.first.device, facts, group.first.power,
                         self.settings, self.agent)


def measure_settings(inventory: Inventory) -> dict[str, Any]:
    """The agent's protocol settings a bench passes (the cache key and the run's params); unset ones are
    the agent's own choice (it sizes windows from the sensor)."""
    return {k: v for k, v in inventory.measure.model_dump(mode="json").items() if v is not None}


def run_bench(target: str, inventory: Inventory, *, labels: list[str] | None = None, fresh: bool = False,
              buckets: str | None = None, train_steps: int = 0, tracking_uri: str | None = None,
              experiment: str = "dance-bench", journal: str | Path = DEFAULT_JOURNAL,
              cache_path: str | Path = DEFAULT_CACHE, use_ray: bool = True, pool: PoolClientLike | None = None,
              new_run: bool = False,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> BenchResult:
    """Measure ``target`` (checkpoint or run id) on the matching boards and log the figures.

    ``pool``: a running pool client (a sweep shares one across its trials); it is used, not
    closed. Without it the bench starts its own (a Ray actor, or threads with ``use_ray=False``).
    A board group none of whose boards answers is reported unmeasured (``BenchResult.unmeasured``)
    while the others are measured. ``new_run``: a bare checkpoint gets a new run even if it was
    benched before (default: its earlier bench run, found by the model's hash).
    """
    t_start = time.monotonic()
    boards = inventory.matching(labels)
    if not boards:
        raise UserError(f"{inventory.source}: no board carries labels {labels} "
                        f"(boards: {', '.join(f'{b.name} {b.labels}' for b in inventory.boards)})")
    groups = board_groups(boards)
    group_names = [g.name for g in groups]  # every group benched (the probe keeps those that answered)
    ckpt, run_id = resolve_target(target, tracking_uri, DEFAULT_EXPORTS / "runs")
    log(f"dance bench: {ckpt} on {len(boards)} board(s) in {len(groups)} kind(s): "
        + ", ".join(f"{g.name} [{', '.join(b.name for b in g.boards)}]" for g in groups))
    notes: list[str] = []
    files = _model_files(ckpt, boards, buckets, train_steps, notes, log)
    ctx = BenchContext(MeasurementCache(cache_path), _PoolHandle(pool, inventory, journal, use_ray),
                       fresh, log, measure_settings(inventory), agent_zip()[1][:16])
    try:
        probes, groups, unmeasured = _probe(boards, groups, ctx, notes)
        facts = {b.name: board_facts(probes[b.name], b.runtime) for b in boards if b.name in probes}
        measurements, todo = _plan(groups, files, train_steps, facts, probes, ctx)
        jobs_run, remeasured = _measure(todo, ckpt, facts, ctx)
    finally:
        ctx.pool.close()
        ctx.cache.close()
    metrics, tags, quality = _summarise(groups, measurements, facts, ckpt, notes)
    for name, why in unmeasured.items():
        tags[f"device.{name}.status"] = f"unmeasured: {why}"
    record = BenchRecord(metrics, tags, measurements, notes, ctx.settings, group_names)
    run_id, uri = log_bench(run_id, ckpt, record, tracking_uri, experiment, new_run)
    return BenchResult(run_id, uri, metrics, tags, measurements, ctx.pool.contacted, jobs_run,
                       time.monotonic() - t_start, notes, unmeasured, quality, remeasured)


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


def _probe(boards: list[Board], groups: list[BoardGroup], ctx: BenchContext, notes: list[str]
           ) -> tuple[dict, list[BoardGroup], dict[str, str]]:
    """Board facts (from the cache unless ``fresh``), the groups with the boards that answered, and the
    groups none of whose boards answered (name → why): those are reported unmeasured, never sink the rest."""
    probes: dict[str, dict[str, Any]] = {}
    need = []
    for b in boards:
        f = None if ctx.fresh else ctx.cache.facts(board_address(b))
        if f is None:
            need.append(b)
        else:
            probes[b.name] = f
    failed: dict[str, str] = {}
    if need:
        # a probe is not cached by the journal across benches: --fresh must really probe again
        nonce = f"{time.time_ns()}" if ctx.fresh else None
        jobs = [Job(kind="probe", board=b.name, meta={"probe": board_address(b), "nonce": nonce}) for b in need]
        ids = ctx.pool.get().submit(jobs)
        for b, out in zip(need, _wait_with_progress(ctx.pool.get(), ids, ctx.log)):
            if out["state"] == "done":
                probes[b.name] = out["result"]
                ctx.cache.put_facts(board_address(b), b.name, out["result"])
            else:
                err = out["error"] or {}
                failed[b.name] = f"{err.get('kind')}: {err.get('message')}"
    live, unmeasured = [], {}
    for g in groups:
        answered = [b for b in g.boards if b.name in probes]
        if answered:
            live.append(BoardGroup(g.name, g.labels, answered))
            notes += [f"board {b.name}: probe failed: {failed[b.name]} (its twins measure instead)"
                      for b in g.boards if b.name in failed]
            continue
        why = "; ".join(f"{b.name}: {failed.get(b.name, 'no answer')}" for b in g.boards)
        unmeasured[g.name] = why
        others = [x.name for x in groups if x.name != g.name]
        ctx.log(f"  kind {g.name}: NOT MEASURED, every board offline ({why})"
                + (f"; measuring {', '.join(others)}; leave it out with --labels" if others else ""))
        notes.append(f"kind {g.name} not measured: every board offline ({why})")
    return probes, live, unmeasured


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
          ctx: BenchContext) -> tuple[list[Measurement], list[PlannedJob]]:
    """One measurement per (group, purpose, bucket); those the cache answers are filled in, the rest planned."""
    measurements: list[Measurement] = []
    todo: list[PlannedJob] = []
    for g in groups:
        for purpose, h, w, frac, path, runtime, steps, shape in _bucket_specs(g, files, train_steps):
            m = Measurement(g.name, purpose, h, w, frac)
            measurements.append(m)
            sha = file_sha256(path)
            key, _ = ctx.key(sha, shape, runtime, steps, g, facts[g.first.name])
            hit = None if ctx.fresh else ctx.cache.get(key)
            if hit is not None:
                m.result, m.board, m.cached = hit["result"], hit["board"], True
                m.features = hit.get("features")
                ctx.log(f"  cached   {g.name:<14} {purpose:<5} {h}x{w}")
                continue
            nonce = f"{time.time_ns()}" if ctx.fresh else None
            has_power = g.first.power != "none" and (g.first.power != "auto" or
                                                     probes[g.first.name].get("power_auto") not in (None, "none"))
            job = Job(model=path, model_sha256=sha, runtime=runtime, trace=has_power,
                      input_shape=shape if steps or purpose == "score" else None, train_steps=steps,
                      num_classes=files.num_classes if steps else None, labels=g.labels,
                      board=g.first.name if not g.labels else None,
                      meta={"kind": g.name, "purpose": purpose, "bucket": f"{h}x{w}", "nonce": nonce})
            todo.append(PlannedJob(m, job, g))
    return measurements, todo


def _measure(todo: list[PlannedJob], ckpt: Path, facts: dict, ctx: BenchContext) -> tuple[int, int]:
    """Run the planned jobs; each result fills its measurement and the cache. A result whose repeats
    disagree (quality ``fail``, ``high_spread``) is measured once more with :data:`EXTRA_REPEATS` more
    repeats, and the second answer kept, flagged as it is. Returns (jobs run, jobs re-measured)."""
    if not todo:
        return 0, 0
    feats = _features(ckpt, [t.measurement for t in todo], ctx.log)
    for t in todo:
        m = t.measurement
        m.features = feats.get((m.purpose, m.height, m.width))
    _run_jobs(todo, ctx)
    again = [t for t in todo if _spread_too_high(t.measurement.result)]
    if again:
        repeats = int(ctx.settings.get("repeats", 3)) + EXTRA_REPEATS
        ctx.log(f"  quality gate: {len(again)} measurement(s) with a spread over the limit; measuring again "
                f"with {repeats} repeats")
        retry = [PlannedJob(t.measurement, _with_repeats(t.job, repeats), t.group) for t in again]
        _run_jobs(retry, ctx)
        for t in retry:
            t.measurement.remeasured = True
    for t in todo:
        m = t.measurement
        if m.result is None:
            continue
        # stored under the key of the settings asked for: the gate's extra repeats are part of them
        f = facts.get(m.board) or facts[t.group.first.name]
        key, parts = ctx.key(t.job.model_sha256, t.job.input_shape or _shape_of(m), t.job.runtime,
                             t.job.train_steps, t.group, f)
        ctx.cache.put(key, parts, {"result": m.result, "board": m.board, "features": m.features}, m.board)
    return len(todo) + len(again), len(again)


#: more repeats the quality gate asks for when the repeats of a measurement disagree
EXTRA_REPEATS = 2


def _spread_too_high(result: dict[str, Any] | None) -> bool:
    return any(r.get("code") == "high_spread" for r in (result or {}).get("reasons") or [])


def _with_repeats(job: Job, repeats: int) -> Job:
    d = job.to_dict()
    d.update(key=None, measure={**(job.measure or {}), "repeats": repeats},
             meta={**job.meta, "nonce": f"{time.time_ns()}", "gate": "remeasure"})
    return Job.from_dict(d)


def _run_jobs(todo: list[PlannedJob], ctx: BenchContext) -> None:
    ids = ctx.pool.get().submit([t.job for t in todo])
    for t, out in zip(todo, _wait_with_progress(ctx.pool.get(), ids, ctx.log)):
        m = t.measurement
        m.board = out["board"] or m.board
        if out["state"] == "done":
            m.result, m.error = out["result"], None
        elif m.result is None:  # a failed re-measurement keeps the first answer
            m.error = out["error"]


def _summarise(groups: list[BoardGroup], measurements: list[Measurement], facts: dict, ckpt: Path,
               notes: list[str]) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Each group's figures (metrics), what it ran on and how far to trust it (tags), and its quality.

    A value nobody knows is left out, never written as the string "None".
    """
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {KIND_TAG: KIND_BENCH, BENCH_CHECKPOINT_TAG: str(ckpt.resolve())}
    quality: dict[str, str] = {}
    for g in groups:
        ms = [m for m in measurements if m.kind == g.name]
        metrics.update(figures(g.name, ms))
        p = f"device.{g.name}."
        tags.update({p + k: str(v) for k, v in _group_tags(g, ms, facts[g.first.name]).items() if v is not None})
        q, reasons = group_quality(ms)
        if q is not None:
            quality[g.name] = q
            tags[p + "quality"] = q
            if reasons:
                tags[p + "quality_reasons"] = "\n".join(dict.fromkeys(reasons))
        for m in ms:
            if m.error:
                notes.append(f"{g.name} {m.purpose} {m.height}x{m.width}: not measured ({m.error.get('kind')}: "
                             f"{m.error.get('message')})")
    return metrics, tags, quality


def _group_tags(g: BoardGroup, ms: list[Measurement], f: dict[str, Any]) -> dict[str, Any]:
    """What a group ran on and in which state: boards, board model, L4T, power mode, clocks, boundary."""
    done = [m.result for m in ms if m.result]
    first = done[0] if done else {}
    before = first.get("board_state_before") or {}
    after = (done[-1] if done else {}).get("board_state_after") or {}
    throttled = sorted({r["detail"] for d in done for r in d.get("reasons") or [] if r.get("code") == "thermal"})
    ran = sorted({m.board for m in ms if m.board})
    return {"board": ",".join(ran or [b.name for b in g.boards]), "board_model": f.get("board_model"),
            "l4t": f.get("l4t"), "power_mode": f.get("power_mode"), "tensorrt": f.get("tensorrt"),
            "runtime": g.first.runtime, "power_source": first.get("power_source"),
            "energy_boundary": first.get("energy_boundary"), "cv_of": first.get("cv_of"),
            "windows_sized_by": (first.get("settings") or {}).get("windows_sized_by"),
            "jetson_clocks": before.get("jetson_clocks"),
            "clocks_before": _clocks(before), "clocks_after": _clocks(after),
            "throttling": "; ".join(throttled) if throttled else ("none seen" if done else None)}


def _clocks(state: dict[str, Any]) -> str | None:
    if not state or state.get("error"):
        return None
    parts = {k: state.get(k) for k in ("cpu_khz", "gpu_hz", "emc_hz", "nvpmodel") if state.get(k) is not None}
    return json.dumps(parts, sort_keys=True) if parts else None


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
    """Wait for the jobs, printing one line per job as it starts (attempts numbered per job), retries,
    finishes or fails, in the order it happened. A board that refuses us (host key, auth) or goes
    offline is said once, with the fix, not once per job."""
    pending = set(ids)
    done: dict[str, dict[str, Any]] = {}
    starts: dict[str, int] = {}
    said: set[str] = set()
    cursor, n = 0, len(ids)
    while pending:
        events, cursor = pool.events(cursor)
        ended: list[str] = []
        for ev in events:
            jid, board = ev.get("job"), ev.get("board")
            if ev["event"] == "offline":
                _once(log, said, board, f"  board {board} is OFFLINE: {ev['message'][:300]}")
            elif jid not in pending:
                continue
            elif ev["event"] == "start":
                starts[jid] = starts.get(jid, 0) + 1
                log(f"  [{len(done) + 1}/{n}] {board}: {_what(ev.get('meta'))} started (attempt {starts[jid]})")
            elif ev["event"] == "retry" and ev.get("kind") in BOARD_FATAL:
                _once(log, said, board, f"  board {board} REFUSED ({ev.get('kind')}; not retried on it, its twins "
                                        f"take its jobs): {ev['message'][:400]}")
            elif ev["event"] == "retry":
                log(f"  [{len(done) + 1}/{n}] {board}: {ev.get('kind')}: {ev['message'][:200]} (will retry)")
            elif ev["event"] in ("done", "failed"):
                ended.append(jid)
        finished = pool.finished(sorted(pending))
        # in event order first; then jobs finished before this wait began (a restarted pool's journal)
        for jid in ended + sorted(set(finished) - set(ended)):
            if jid in finished and jid in pending:
                pending.discard(jid)
                done[jid] = finished[jid]
                log(_outcome_line(finished[jid], len(done), n))
        if pending:
            time.sleep(0.2)
    return [done[i] for i in ids]


def _once(log: Callable[[str], None], said: set[str], key: str | None, line: str) -> None:
    if key not in said:
        said.add(key)
        log(line)


def _what(meta: dict[str, Any] | None) -> str:
    meta = meta or {}
    return f"{meta.get('kind', '')} {meta.get('purpose', 'probe')} {meta.get('bucket', '')}".strip()


def _outcome_line(out: dict[str, Any], i: int, n: int) -> str:
    what = _what(out.get("meta"))
    if out["state"] != "done":
        err = out["error"] or {}
        return f"  [{i}/{n}] {out['board'] or '-'}: {what} FAILED: {err.get('kind')}: {err.get('message')}"
    r = out["result"] or {}
    lat = (r.get("latency_ms") or {}).get("p50")
    e = r.get("energy_j_per_image_gross")
    extra = (f"  p50 {lat:.2f} ms" if lat is not None else "") + (
        f", {e:.4g} J/image" if e is not None else (", energy null" if "energy_j_per_image_gross" in r else ""))
    q = r.get("quality")
    if q in ("warn", "fail"):
        codes = sorted({x.get("code") for x in r.get("reasons") or [] if x.get("level") in ("warn", "fail")})
        extra += f"  [quality {q}: {', '.join(codes)}]"
    return f"  [{i}/{n}] {out['board']}: {what} done{extra}"


def table(result: BenchResult) -> str:
    """The terminal table: one row per bucket and board kind, then the expected figures per kind, their
    quality, and the kinds nothing measured."""
    rows = [("kind", "purpose", "bucket", "share", "board", "p50 ms", "p90 ms", "J/image", "J/step", "quality",
             "source")]

    def fmt(v, f="{:.4g}"):
        return "-" if v is None else f.format(v)

    for m in result.measurements:
        r = m.result or {}
        lat = r.get("latency_ms") or {}
        src = "cache" if m.cached else ("FAILED " + str((m.error or {}).get("kind")) if m.error else "measured")
        if m.remeasured:
            src += " (again)"
        rows.append((m.kind, m.purpose, f"{m.height}x{m.width}", f"{100 * m.fraction:.1f}%", m.board or "-",
                     fmt(lat.get("p50"), "{:.2f}"), fmt(lat.get("p90"), "{:.2f}"),
                     fmt(r.get("energy_j_per_image_gross")), fmt(r.get("energy_j_per_step_gross")),
                     m.quality or "-", src))
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
                     f"train {fmt(g(p + 'train_energy_j_per_step'))} J/step; quality {result.quality.get(k, '-')}")
        reasons = result.tags.get(p + "quality_reasons")
        if reasons and result.quality.get(k) in ("warn", "fail"):
            lines += [f"    {line}" for line in reasons.splitlines()]
    for k, why in result.unmeasured.items():
        lines.append(f"{k}: NOT MEASURED (every board offline: {why})")
    return "\n".join(lines)
