"""Which ended trials a hardware-in-the-loop sweep measures."""
from __future__ import annotations

from orchestrator.hil.schema import HilConfig
from orchestrator.hil.select import decide, front_rank

OBJ = [("miou", "max"), ("device.energy_j_per_image", "min")]


def row(trial, miou, status="FINISHED", epochs=3, **m):
    return {"trial": trial, "status": status, "epochs": epochs, "metrics": {"miou": miou, **m}}


def test_all_measures_every_trial_with_a_checkpoint():
    hil = HilConfig(measure="all")
    assert decide(hil, row("a", 0.1, status="KILLED", epochs=1), [], OBJ, epochs=3, grace=1, model_ready=False)[0]
    assert not decide(hil, {**row("a", 0.1), "has_checkpoint": False}, [], OBJ, epochs=3, grace=1,
                      model_ready=False)[0]


def test_promoted_means_past_the_first_rung():
    hil = HilConfig(measure="promoted")
    assert not decide(hil, row("a", 0.1, status="KILLED", epochs=1), [], OBJ, epochs=3, grace=1, model_ready=False)[0]
    assert decide(hil, row("b", 0.1, status="KILLED", epochs=2), [], OBJ, epochs=3, grace=1, model_ready=False)[0]


def test_pareto_top_stands_in_counted_flops_for_an_unmeasured_device_objective():
    hil = HilConfig(measure={"pareto_top": 1})
    ended = [row("a", 0.5, infer_flops_per_image=2e9), row("b", 0.3, infer_flops_per_image=3e9),
             row("c", 0.2, infer_flops_per_image=1e9)]   # worst mIoU, cheapest: on the front
    assert decide(hil, ended[0], ended, OBJ, epochs=3, grace=None, model_ready=False)[0]
    ok, why = decide(hil, ended[1], ended, OBJ, epochs=3, grace=None, model_ready=False)
    assert not ok and "rank 2" in why
    assert decide(hil, ended[2], ended, OBJ, epochs=3, grace=None, model_ready=False)[0]
    assert decide(HilConfig(measure={"pareto_top": 2}), ended[1], ended, OBJ, epochs=3, grace=None,
                  model_ready=False)[0]
    # a measured figure replaces the stand-in
    ended[1]["metrics"]["device.energy_j_per_image"] = 0.1
    assert front_rank("b", ended, OBJ, predicted=False) == 1


def test_predicted_front_uses_predictions_and_measures_to_learn_when_cold():
    hil = HilConfig(measure="predicted_front")
    ended = [row("a", 0.5, **{"predicted.device.energy_j_per_image": 2.0}),
             row("b", 0.3, **{"predicted.device.energy_j_per_image": 1.0}),   # cheaper: on the front
             row("c", 0.2, **{"predicted.device.energy_j_per_image": 3.0})]   # dominated by a and b
    assert decide(hil, ended[1], ended, OBJ, epochs=3, grace=None, model_ready=True)[0]
    ok, why = decide(hil, ended[2], ended, OBJ, epochs=3, grace=None, model_ready=True)
    assert not ok and "predicted Pareto rank 2" in why
    assert decide(hil, ended[2], ended, OBJ, epochs=3, grace=None, model_ready=False)[0]  # cold: measure
    # a measured figure wins over the prediction
    ended[2]["metrics"]["device.energy_j_per_image"] = 0.5
    assert front_rank("c", ended, OBJ, predicted=True) == 1


def test_a_row_without_a_value_does_not_drop_the_objective_for_the_others():
    """A trial measured 'to learn' has no prediction and no measurement yet: it is left out of the
    ranking, and the predicted cheapest trial is still on the front."""
    hil = HilConfig(measure="predicted_front")
    ended = [row("a", 0.5, **{"predicted.device.energy_j_per_image": 1.0}),
             row("b", 0.9),
             row("c", 0.3, **{"predicted.device.energy_j_per_image": 0.5})]
    ok, why = decide(hil, ended[2], ended, OBJ, epochs=3, grace=None, model_ready=True)
    assert ok and "rank 1" in why
    assert front_rank("b", ended, OBJ, predicted=True) is None


def test_a_trial_stopped_early_is_not_ranked():
    hil = HilConfig(measure={"pareto_top": 3})
    assert not decide(hil, row("a", 0.9, status="KILLED"), [], OBJ, epochs=3, grace=1, model_ready=True)[0]
