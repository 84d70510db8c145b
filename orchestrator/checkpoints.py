"""Finding and opening a trained model: a checkpoint file, a checkpoint folder or an MLflow run id.

Every command that takes a model (``eval``, ``predict``, ``export``, ``bench``, ``data score``,
``report``'s timings, a hardware-in-the-loop sweep) resolves it here, so "what counts as a
checkpoint" has one answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.runs.schema import RUN_ID
from orchestrator.runs.tracking import resolve_tracking_uri

# torch-loading worker modules and mlflow are imported inside the functions that need them:
# `dance --help` and config checks import this module and should not pay for torch.

RUN_DOWNLOADS = Path(".dance/bench/runs")  # a run's checkpoint artifact, downloaded once


@dataclass
class LoadedRun:
    """A checkpoint file, the checkpoint read from it and the training config it carries (or None)."""

    file: Path
    checkpoint: Any  # workers.checkpoint.Checkpoint
    cfg: Any  # ExperimentConfig | None


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a directory holding ``model.pt`` (a Ray Train checkpoint folder)."""
    from workers.train_loop import CHECKPOINT_FILE

    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise UserError(f"{path}: folder has no {CHECKPOINT_FILE}")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    return path


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    """Load the checkpoint at ``path`` (file or folder) and validate the config stored in it."""
    from pydantic import ValidationError

    from workers.checkpoint import CheckpointError, load_checkpoint
    from workers.config import ExperimentConfig

    file = checkpoint_file(path)
    try:
        ck = load_checkpoint(file, map_location=device)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    cfg = None
    if ck.extra.get("config"):
        try:
            cfg = ExperimentConfig.model_validate(ck.extra["config"])
        except ValidationError as exc:
            raise UserError(f"{file}: the config stored in the checkpoint no longer validates: {exc}") from None
    return LoadedRun(file, ck, cfg)


def resolve_inputs(run: LoadedRun, *, split: str | None = None, dataset: str | None = None,
                   root: str | Path | None = None, full_res: bool = False, use_cache: bool = True, progress=None):
    """(dataset, per-image inference sizes, p or None) for ``split`` of the checkpoint's dataset.

    ``dataset``/``root`` override the dataset the checkpoint was trained on; ``full_res`` runs every
    image at its stored size (no CAD). Sizes follow the same rule as training (Eq. 1 score → p → CAD).
    """
    from workers.config import DataConfig
    from workers.dance.slimming import SlimmingConfig, indicator_p
    from workers.data.datasets import DATASET_KINDS, open_dataset
    from workers.data.scoring import score_dataset
    from workers.evaluate import inference_sizes, stored_sizes
    from workers.models.base import size_rule

    cfg = run.cfg
    data = cfg.data if cfg is not None else DataConfig()
    kind = dataset or (cfg.data.kind if cfg is not None else None)
    root = root or (cfg.data.root if cfg is not None else None)
    if kind is None or root is None:
        raise UserError(f"{run.file}: the checkpoint does not record its dataset; pass --dataset and --root")
    if kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}")
    ds = open_dataset(kind, root, split or data.val_split)
    ck_classes = run.checkpoint.meta.get("class_names")
    if ck_classes and list(ck_classes) != list(ds.class_names):
        raise UserError(f"{run.file}: trained for classes {len(ck_classes)} ({', '.join(ck_classes[:3])}, ...), "
                        f"but {kind} has {ds.num_classes} ({', '.join(ds.class_names[:3])}, ...)")
    slimming = cfg.slimming if cfg is not None else SlimmingConfig()
    # the sizes the model was trained and evaluated at
    quantum, min_size = size_rule(run.checkpoint.model, cfg.train.size_quantum if cfg is not None else None)
    p = None
    if not full_res and slimming.cad and run.checkpoint.cdf is not None:
        sc = score_dataset(ds, cache_dir=data.cache_dir, use_cache=use_cache, batch_size=data.score_batch,
                           progress=progress)
        # p_mode (paper Table 6): the same indicator the run trained and evaluated with
        p = indicator_p(run.checkpoint.cdf.p(sc), slimming, cfg.seed if cfg is not None else 0, ds.split)
    rule = slimming if not full_res else slimming.model_copy(update={"cad": False})
    sizes = inference_sizes(stored_sizes(ds), p, rule, quantum, min_size)
    return ds, sizes, p


def resolve_target(target: str, tracking_uri: str | None = None,
                   download_dir: Path = RUN_DOWNLOADS) -> tuple[Path, str | None]:
    """(checkpoint file, MLflow run id or None) from a checkpoint path or a run's id.

    A run id's ``checkpoint`` artifact is downloaded under ``download_dir/<run id>``.
    """
    p = Path(target).expanduser()
    if p.exists():
        return checkpoint_file(p), None
    if not RUN_ID.match(target):
        raise UserError(f"{target}: neither a checkpoint file/folder nor an MLflow run id (32 hex digits)")
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    client = mlflow.MlflowClient()
    try:
        client.get_run(target)
    except Exception as exc:
        raise UserError(f"run {target}: not found in {mlflow.get_tracking_uri()} ({exc.__class__.__name__})") from None
    dest = Path(download_dir) / target
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(client.download_artifacts(target, "checkpoint", str(dest)))
    except Exception as exc:
        raise UserError(f"run {target} has no 'checkpoint' artifact to bench "
                        f"({exc.__class__.__name__}: {exc})") from None
    return checkpoint_file(local), target
