"""One training run: score once, build the ``TorchTrainer``, relay its reports to MLflow.

The driver (this process) validates the config, scores the training set once (cached)
and fits the CDF (:func:`workers.prepare.worker_config`), then runs
:func:`workers.train_loop.train_loop` on N Ray Train workers. A Ray Train callback on the
controller forwards every epoch's report through a Ray queue; the driver logs it to MLflow
as step ``epoch`` and drives the terminal progress. At the end the last checkpoint
(model, pruning report) is logged as artifacts.
"""
from __future__ import annotations

import json
import logging
import os
import queue as _queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from orchestrator.errors import UserError
from orchestrator.progress import format_value, progress_bar
from orchestrator.runs.provenance import weights_tags
from orchestrator.runs.schema import KIND_TAG, KIND_TRAIN, mlflow_metrics
from orchestrator.runs.tracking import (
    experiment_of,
    flatten,
    log_artifacts,
    log_epoch,
    log_params,
    resolve_tracking_uri,
    setup,
)
from orchestrator.storage import Storage, is_uri, resolve_storage
from workers.config import ExperimentConfig
from workers.pruning_report import plot_pruning_report

# ray, mlflow and the torch-loading worker modules are imported where they are used: `dance sweep
# --dry-run` and the board commands import this module for its checks and `ensure_ray`.

log = logging.getLogger(__name__)

HEADLINE = ("epoch", "miou", "train_flops", "infer_flops_per_image", "header_channels_kept",
            "dropped_fraction", "images_per_s", "epoch_time_s", "energy_j")


def absolute_paths(cfg: ExperimentConfig, cwd: Path | None = None) -> ExperimentConfig:
    """Resolve the config's relative paths against ``cwd`` (default: the driver's); workers may run elsewhere."""
    base = Path.cwd() if cwd is None else Path(cwd)

    def absp(p):
        if p is None:
            return None
        p = Path(p).expanduser()
        return (p if p.is_absolute() else base / p).resolve()

    data = cfg.data.model_copy(update={"root": absp(cfg.data.root), "cache_dir": absp(cfg.data.cache_dir)})
    fi = cfg.train.fault_injection
    train = cfg.train.model_copy(update={
        "init_checkpoint": absp(cfg.train.init_checkpoint),
        "storage_path": cfg.train.storage_path if is_uri(cfg.train.storage_path) else str(absp(cfg.train.storage_path)),
        "fault_injection": fi.model_copy(update={"marker": absp(fi.marker)}) if fi is not None else None})
    model = cfg.model.model_copy(update={"pretrained_backbone": absp(cfg.model.pretrained_backbone)})
    return cfg.model_copy(update={"data": data, "train": train, "model": model})


def ensure_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a local Ray instance (DESIGN §5).

    Worker output reaches the terminal only with ``verbose`` (it stays in Ray's session logs);
    failures still surface through the run's result.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "configure_logging": True, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # The dashboard (on 127.0.0.1 only) serves the State API, which Ray Train uses to remove the
        # placement groups of worker groups whose trial was stopped (ASHA): without it their CPUs leak
        # and the next trials wait for them forever (measured here with Ray 2.60).
        _start_local_ray(num_cpus, kwargs)


DASHBOARD_TRIES = 3  # a busy machine can take minutes to start the dashboard: try again, a bounded number of times


def _start_local_ray(num_cpus: int | None, kwargs: dict[str, Any]) -> None:
    """``ray.init`` of a local instance with its dashboard, tried again (with a line saying so) when the
    dashboard does not come up in time; a clear error, never a raw traceback, when it never does."""
    import ray

    for attempt in range(1, DASHBOARD_TRIES + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
            return
        except Exception as exc:  # Ray raises plain Exceptions (and ConnectionError) for a late dashboard
            if "dashboard" not in str(exc).lower():
                raise
            if ray.is_initialized():
                ray.shutdown()
            if attempt == DASHBOARD_TRIES:
                raise UserError(f"the local Ray instance's dashboard did not start in {DASHBOARD_TRIES} tries "
                                f"({str(exc).strip().splitlines()[0][:200]}); the machine may be overloaded: "
                                "try again when it is quieter, or start Ray yourself (`ray start --head "
                                "--include-dashboard=true`) and pass --address") from None
            log.warning("the local Ray dashboard did not start in time (try %d of %d); starting Ray again",
                        attempt, DASHBOARD_TRIES)


def cluster_check(cfg: ExperimentConfig) -> None:
    """Refuse a run the cluster can never place (it would wait forever)."""
    import ray

    res = ray.cluster_resources()
    s = cfg.scaling
    need_cpu = s.num_workers * s.cpus_per_worker
    if need_cpu > res.get("CPU", 0) + 1e-9:
        raise UserError(f"scaling: {s.num_workers} workers × {s.cpus_per_worker} CPUs = {need_cpu:g} CPUs, "
                        f"but the Ray cluster has {res.get('CPU', 0):g}; lower scaling.cpus_per_worker or num_workers")
    if s.use_gpu and s.num_workers * s.gpus_per_worker > res.get("GPU", 0) + 1e-9:
        raise UserError(f"scaling.use_gpu: {s.num_workers} workers × {s.gpus_per_worker} GPUs, "
                        f"but the Ray cluster has {res.get('GPU', 0):g} GPUs")


def _relay_callback(q):
    from ray.train import UserCallback

    class ReportRelay(UserCallback):
        """Runs on the Train controller: forward rank 0's report (and failures) to the driver."""

        def __init__(self, queue) -> None:
            self.queue = queue

        def after_report(self, run_context, metrics, checkpoint) -> None:
            try:
                self.queue.put({"metrics": dict(metrics[0]) if metrics else {},
                                "checkpoint": checkpoint.path if checkpoint is not None else None}, timeout=10)
            except Exception:  # the driver may be gone; never fail the run over progress
                pass

        def after_exception(self, run_context, worker_exceptions) -> None:
            try:
                self.queue.put({"failure": {int(k): f"{type(v).__name__}: {v}"[:500]
                                            for k, v in worker_exceptions.items()}}, timeout=10)
            except Exception:
                pass

    return ReportRelay(q)


TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def build_trainer(cfg: ExperimentConfig, worker_cfg: dict, *, run_name: str, callbacks: list | None = None,
                  log_level: str = "WARNING", train_fn=None, storage: Storage | None = None,
                  max_failures: int | None = None):
    """The ``TorchTrainer`` for ``cfg`` (Train V2 API names, Ray 2.60); ``storage`` defaults to train.storage_path,
    ``max_failures`` (Train's worker-group retries) to train.max_failures."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workers.train_loop import train_loop

    # Ray Train's controller learns of every report, of the end and of a failure only when it polls its
    # workers; at its 2 s default a tiny trial took 25.6 s, at 0.5 s 20.2 s (bench_sweep.py --load 10).
    # Set here, in the process that calls fit(): Ray Train passes it on to the controller and the workers.
    # A value the user set is kept.
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    s, t = cfg.scaling, cfg.train
    resources: dict[str, float] = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    backend = None if s.backend == "auto" else s.backend
    storage = storage or resolve_storage(t.storage_path)
    retries = t.max_failures if max_failures is None else max_failures
    return TorchTrainer(
        train_fn or train_loop,
        train_loop_config=worker_cfg,
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name, storage_path=storage.path, storage_filesystem=storage.filesystem,
            failure_config=FailureConfig(max_failures=retries),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level=log_level),
        ),
    )


@dataclass
class TrainOutcome:
    run_name: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint_dir: Path | None
    mlflow_run_id: str | None
    tracking_uri: str | None
    failures: list[dict] = field(default_factory=list)

    @property
    def checkpoint_file(self) -> Path | None:
        from workers.train_loop import CHECKPOINT_FILE

        return self.checkpoint_dir / CHECKPOINT_FILE if self.checkpoint_dir else None


def log_run_artifacts(run_id: str, ckpt_dir: Path | None, cfg: ExperimentConfig, history: list[dict], client) -> None:

    from workers.train_loop import REPORT_FILE

    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        (tmp_p / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        (tmp_p / "history.json").write_text(json.dumps(history, indent=1))
        files = [tmp_p / "config.yaml", tmp_p / "history.json"]
        if ckpt_dir is not None and (ckpt_dir / REPORT_FILE).is_file():
            report = json.loads((ckpt_dir / REPORT_FILE).read_text())
            try:
                files.append(plot_pruning_report(report, tmp_p / "pruning_report.png"))
            except Exception as exc:  # a plot must not lose the run's artifacts
                log.warning("pruning plot failed: %s", exc)
        log_artifacts(files, run_id, client=client)
        if ckpt_dir is not None:
            log_artifacts([ckpt_dir], run_id, "checkpoint", client=client)


def preflight(cfg: ExperimentConfig) -> None:
    """Check on the driver what would otherwise fail inside every worker (and be retried)."""
    from workers.checkpoint import CheckpointError, read_checkpoint

    if cfg.train.init_checkpoint is not None:
        if not Path(cfg.train.init_checkpoint).is_file():
            raise UserError(f"train.init_checkpoint: {cfg.train.init_checkpoint}: no such checkpoint file")
        try:
            read_checkpoint(cfg.train.init_checkpoint)
        except CheckpointError as exc:
            raise UserError(f"train.init_checkpoint: {exc}") from None
    weights = cfg.model.pretrained_backbone
    if weights is not None and not Path(weights).is_file():
        raise UserError(f"model.pretrained_backbone: {weights}: no such weights file")


def failure_reason(exc: BaseException) -> str:
    """The first worker's own error, in one line, out of Ray Train's wrapped exceptions."""
    inner: BaseException = exc
    failures = getattr(exc, "worker_failures", None)
    if failures:
        inner = failures[min(failures)]
    inner = getattr(inner, "controller_failure", None) or inner
    while getattr(inner, "cause", None) is not None and inner.cause is not inner:  # RayTaskError wrappers
        inner = inner.cause
    text = str(inner).strip().splitlines()
    last = next((line.strip() for line in reversed(text) if line.strip()), type(inner).__name__)
    return f"{type(inner).__name__}: {last}" if not last.startswith(type(inner).__name__) else last


def run_training(cfg: ExperimentConfig, *, address: str | None = None, tracking_uri: str | None = None,
                 run_name: str | None = None, progress: bool | None = None,
                 on_epoch: Callable[[dict], None] | None = None, print_fn: Callable[[str], None] | None = print,
                 worker_extra: dict | None = None, log_level: str = "WARNING", verbose: bool = False) -> TrainOutcome:
    """Score, train on Ray, log to MLflow; returns the final metrics and checkpoint."""
    from ray.util.queue import Queue

    from workers.prepare import worker_config

    cfg = absolute_paths(cfg)
    name = run_name or cfg.tracking.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    preflight(cfg)
    with progress_bar("scoring train images (Eq. 1)", enabled=progress) as bar_t, \
            progress_bar("scoring val images (Eq. 1)", enabled=progress) as bar_v:
        wcfg = worker_config(cfg, progress_train=bar_t, progress_val=bar_v, run_name=name)
    wcfg.update(worker_extra or {})

    ensure_ray(address, verbose=verbose)
    cluster_check(cfg)
    client, run_id, uri = _open_run(cfg, wcfg, name, tracking_uri)

    q = Queue(actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, wcfg, run_name=name, callbacks=[_relay_callback(q)], log_level=log_level)
    relay = _EpochRelay(cfg.train.epochs, client, run_id, on_epoch, print_fn)
    finished = False
    try:
        with progress_bar(f"training {name}", enabled=progress) as bar:
            relay.bar = bar
            bar(0, cfg.train.epochs)
            result = _fit_relaying(trainer, q, relay)
        finished = True
    finally:
        try:
            q.shutdown()
        except Exception:
            pass
        if client is not None and not finished:
            client.set_terminated(run_id, "FAILED")
    last = relay.last_ckpt
    ckpt_dir = Path(result.checkpoint.path) if result.checkpoint is not None else (Path(last) if last else None)
    metrics = dict(result.metrics or (relay.history[-1] if relay.history else {}))
    if client is not None:
        log_run_artifacts(run_id, ckpt_dir, cfg, relay.history, client)
        client.set_terminated(run_id, "FINISHED")
    return TrainOutcome(name, metrics, relay.history, ckpt_dir, run_id, uri, relay.failures)


def _open_run(cfg: ExperimentConfig, wcfg: dict, name: str, tracking_uri: str | None):
    """(client, run id, tracking URI) of the run's new MLflow run with its params; Nones without tracking."""
    if not cfg.tracking.enabled:
        return None, None, None
    import mlflow

    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.tracking_uri)
    exp_id = setup(uri, experiment_of(cfg))
    client = mlflow.MlflowClient()
    tags = {KIND_TAG: KIND_TRAIN, "ray.run_name": name, **weights_tags(cfg.model.pretrained_backbone)}
    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    params = flatten(cfg.model_dump(mode="json"))
    if wcfg.get("cdf"):
        params.update({"cdf.loc": str(wcfg["cdf"]["loc"]), "cdf.scale": str(wcfg["cdf"]["scale"])})
    params["resolved.lr"], params["resolved.batch_size"] = str(cfg.lr), str(cfg.batch_size)
    log_params(params, client, run_id)
    return client, run_id, uri


class _EpochRelay:
    """What the driver does with each event the workers' callback relays: log, show, remember."""

    def __init__(self, epochs: int, client, run_id: str | None, on_epoch: Callable[[dict], None] | None,
                 print_fn: Callable[[str], None] | None) -> None:
        self.epochs, self.client, self.run_id = epochs, client, run_id
        self.on_epoch, self.print_fn = on_epoch, print_fn
        self.bar: Callable[..., None] = lambda *a: None
        self.history: list[dict] = []
        self.failures: list[dict] = []
        self.last_ckpt: str | None = None

    def __call__(self, ev: dict) -> None:
        if "failure" in ev:
            self.failures.append(ev["failure"])
            if self.print_fn:
                self.print_fn(f"worker failure {ev['failure']}; Ray Train restarts from the last checkpoint")
            return
        m = ev["metrics"]
        self.history.append(m)
        self.last_ckpt = ev.get("checkpoint") or self.last_ckpt
        if self.client is not None:
            # step = the worker's epoch index (0-based), names grouped for the UI (as a sweep's trials)
            log_epoch(mlflow_metrics(m), int(m.get("epoch", len(self.history) - 1)), self.run_id, self.client)
        self.bar(int(m.get("epoch", 0)) + 1, self.epochs)
        if self.on_epoch:
            self.on_epoch(m)
        if self.print_fn:
            self.print_fn(format_epoch(m, self.epochs))


def _fit_relaying(trainer, q, relay: _EpochRelay):
    """``trainer.fit()`` in a thread while this one relays the queue's events; returns the result or raises
    a :class:`UserError` naming the first worker's own error."""
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # surfaced in the main thread
            box["error"] = exc

    thread = threading.Thread(target=fit, name="dance-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        try:
            relay(q.get(block=True, timeout=0.5))
        except _queue.Empty:
            pass
    while True:
        try:
            relay(q.get_nowait())
        except _queue.Empty:
            break
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, (KeyboardInterrupt, UserError)):
            raise exc
        raise UserError(f"training failed after {len(relay.history)} epoch(s): {failure_reason(exc)}") from exc
    result = box["result"]
    if result.error is not None:
        raise UserError(f"training failed: {result.error}")
    return result


def format_epoch(m: dict, epochs: int) -> str:
    parts = [f"epoch {int(m.get('epoch', 0)) + 1}/{epochs}"]
    for k in HEADLINE[1:]:
        if k in m:
            parts.append(f"{k}={format_value(m[k])}")
    if m.get("ans_stage", 0) < m.get("ans_stage_due", 0):
        parts.append(f"(ANS at stage {m['ans_stage']} of {m['ans_stage_due']} due: the header's BN scales are not "
                     "separated enough yet; the next stage waits)")
    return "  ".join(parts)
