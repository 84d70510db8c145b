"""What runs per trial: resolve its config, then one ``TorchTrainer`` that reports to Tune.

This function is the Tune trainable (wrapped in ``tune.with_parameters`` and
``tune.with_resources`` by the runner). It never scores images: the driver scored the
dataset and fitted the CDF once per sweep and hands the scores in as ``prepared``. The
Train run is ``<storage>/<sweep>/train/<trial id>``, beside Tune's own folder of the sweep,
so a trial that is resumed (driver restart, ``Tuner.restore``) finds its own Train run and
continues from its last checkpoint. That is also how a trial lost with its node is retried
(``sweep.max_failures``, :mod:`.failures`); a trial whose own code failed is not.
"""
from __future__ import annotations

import time
from typing import Any

PREPARED_KEYS = ("cdf", "train_p", "val_p", "scoring_flops", "sc_train_summary", "pretrained_sha256")


def run_trial(config: dict[str, Any], *, spec, prepared: dict[str, Any], storage, sweep_id: str) -> None:
    """Tune trainable: one DANCE training run for the point ``config`` of the space."""
    started = time.time()  # wall clock: the worker that reads it may be on another node
    import ray.tune
    from ray.train.v2.api.exceptions import TrainingFailedError
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.sweep.failures import (
        TrialCodeError,
        TrialLost,
        lost_message,
        lost_to_infrastructure,
        note_own_error,
        noted_own_error,
        own_error_text,
    )
    from orchestrator.training import build_trainer

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = spec.resolve(config)
    name = trial_id
    wcfg = {"experiment": cfg.model_dump(mode="json"), "run_name": name,
            **{k: prepared.get(k) for k in PREPARED_KEYS}}
    if not cfg.slimming.uses_p:  # p is not used; keep the worker config as `dance train` builds it
        wcfg.update(cdf=None, train_p=None, val_p=None, scoring_flops=0)
    runs = storage.child(sweep_id, "train")
    noted = noted_own_error(runs, trial_id)
    if noted is not None:  # an earlier attempt failed in its own code: the same error, without training again
        raise TrialCodeError(f"trial {trial_id} failed in its own code (kept from its first attempt, "
                             f"not retried):\n{noted}")
    # where the start goes (workers.metrics.START_METRICS): the worker reports these against its own times
    wcfg["trace"] = {"trial_start": started, "train_called": time.time()}
    # Train's retries off: Tune retries the trial (sweep.max_failures) when it was lost, never for its own error
    trainer = build_trainer(cfg, wcfg, run_name=name, callbacks=[TuneReportCallback()], storage=runs,
                            max_failures=0)
    try:
        error = trainer.fit().error
    except TrainingFailedError as exc:
        error = exc
    if error is None:
        return
    if lost_to_infrastructure(error):
        raise TrialLost(lost_message(trial_id, error)) from error
    text = own_error_text(error)
    note_own_error(runs, trial_id, text)
    raise TrialCodeError(f"trial {trial_id} failed in its own code (not retried):\n{text}") from error
