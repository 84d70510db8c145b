"""What runs per trial: resolve its config, then one ``TorchTrainer`` that reports to Tune.

This function is the Tune trainable (wrapped in ``tune.with_parameters`` and
``tune.with_resources`` by the runner). It never scores images: the driver scored the
dataset and fitted the CDF once per sweep and hands the scores in as ``prepared``. The
Train run is ``<storage>/<sweep>/train/<trial id>``, beside Tune's own folder of the sweep,
so a trial that is resumed (driver restart, ``Tuner.restore``) finds its own Train run and
continues from its last checkpoint.
"""
from __future__ import annotations

from typing import Any

PREPARED_KEYS = ("cdf", "train_p", "val_p", "scoring_flops", "sc_train_summary")


def run_trial(config: dict[str, Any], *, spec, prepared: dict[str, Any], storage, sweep_id: str) -> None:
    """Tune trainable: one DANCE training run for the point ``config`` of the space."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.training import build_trainer

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = spec.resolve(config)
    name = trial_id
    wcfg = {"experiment": cfg.model_dump(mode="json"), "run_name": name,
            **{k: prepared.get(k) for k in PREPARED_KEYS}}
    if not cfg.slimming.uses_p:  # p is not used; keep the worker config as `dance train` builds it
        wcfg.update(cdf=None, train_p=None, val_p=None, scoring_flops=0)
    trainer = build_trainer(cfg, wcfg, run_name=name, callbacks=[TuneReportCallback()],
                            storage=storage.child(sweep_id, "train"))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
