"""Eq. 2's weighted loss and the Cityscapes-definition mIoU."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workers.dance.loss import cal_loss, expected_weight, per_image_ce, weighted_loss
from workers.metrics import ConfusionMatrix


def test_weighted_loss_is_weighted_mean_of_per_image_ce():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, 6)
    target = torch.randint(0, 4, (3, 5, 6))
    target[1, :2] = 255  # ignored pixels only affect image 1's denominator
    w = torch.tensor([0.2, 1.0, 0.5])
    li = [F.cross_entropy(logits[i:i + 1], target[i:i + 1], ignore_index=255) for i in range(3)]
    expected = sum(w[i] * li[i] for i in range(3)) / w.sum()
    assert weighted_loss(logits, target, w).item() == pytest.approx(expected.item(), rel=1e-6)


def test_image_without_labels_carries_no_weight():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0] = 255
    losses, has = per_image_ce(logits, target)
    assert has.tolist() == [False, True]
    loss = weighted_loss(logits, target, torch.tensor([5.0, 1.0]))
    assert loss.item() == pytest.approx(losses[1].item())


def test_all_zero_weights_give_zero_loss_with_graph():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = weighted_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_miou_against_hand_worked_matrix():
    # 3 classes; ground truth rows, predictions columns:
    #        p0 p1 p2
    #   g0 [ 3, 1, 0 ]     IoU0 = 3 / (4 + 3 − 3) = 0.75
    #   g1 [ 0, 2, 2 ]     IoU1 = 2 / (4 + 3 − 2) = 0.4
    #   g2 [ 0, 0, 0 ]     IoU2 = 0 / (0 + 2 − 0) = 0   (predicted but never present: counts as 0)
    gt = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 255, 255])
    pr = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])  # the two ignored pixels count nowhere
    cm = ConfusionMatrix(3)
    cm.update(pr, gt)
    np.testing.assert_allclose(cm.iou(), [0.75, 0.4, 0.0])
    assert cm.miou() == pytest.approx((0.75 + 0.4 + 0.0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)


def test_absent_class_is_nan_and_left_out():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    iou = cm.iou()
    assert math.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 0.5) / 2)
    assert cm.per_class(["a", "b", "c"])["c"] is None


def test_matrices_merge_like_one_pass():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.integers(0, 4, 1000))
    pr = torch.from_numpy(rng.integers(0, 4, 1000))
    whole = ConfusionMatrix(4)
    whole.update(pr, gt)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(pr[:400], gt[:400])
    b.update(pr[400:], gt[400:])
    assert torch.equal(a.merge(b).matrix, whole.matrix)


def test_out_of_range_label_is_an_error():
    with pytest.raises(ValueError, match="label values"):
        ConfusionMatrix(2).update(torch.tensor([0]), torch.tensor([7]))


def _global_batch():
    torch.manual_seed(0)
    return torch.randn(4, 3, 5, 5), torch.randint(0, 3, (4, 5, 5)), torch.tensor([0.9, 0.1, 0.5, 0.2])


def _rank_grads(rank, world, port, out, expected):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    feats, target, weights = _global_batch()
    param = torch.ones(3, 1, 1, requires_grad=True)  # a weight shared by both ranks, as under DDP
    part = slice(2 * rank, 2 * rank + 2)
    cal_loss(feats[part] * param, target[part], weights[part], expected_weight=expected,
             across_ranks=True).loss.backward()
    grad = param.grad.clone()
    dist.all_reduce(grad)  # DDP sums the ranks' gradients ...
    out[rank] = (grad / world).numpy()  # ... and averages them
    dist.destroy_process_group()


@pytest.mark.parametrize("expected", [None, 0.4], ids=["batch", "epoch"])
def test_loss_across_ranks_equals_cal_over_the_global_batch(expected):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank_grads, args=(2, port, out, expected), nprocs=2, join=True)
    feats, target, weights = _global_batch()
    param = torch.ones(3, 1, 1, requires_grad=True)
    cal_loss(feats * param, target, weights, expected_weight=expected).loss.backward()
    np.testing.assert_allclose(out[0], param.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out[1], param.grad.numpy(), rtol=1e-5)
    if expected is not None:
        return  # with equal images per rank the epoch form needs no global sum of weights
    # the naive per-rank normalisation would differ (weights are unbalanced between the ranks)
    naive = []
    for part in (slice(0, 2), slice(2, 4)):
        p = torch.ones(3, 1, 1, requires_grad=True)
        cal_loss(feats[part] * p, target[part], weights[part], expected_weight=expected).loss.backward()
        naive.append(p.grad)
    assert not np.allclose(((naive[0] + naive[1]) / 2).numpy(), param.grad.numpy(), rtol=1e-3)


def test_batch_normalisation_cancels_cal_within_a_one_p_batch_and_epoch_normalisation_keeps_it():
    """Batches hold one CAD size, so nearly one p: Eq. 2 as printed weighs them all alike."""
    torch.manual_seed(1)
    logits, target = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4, 6, 6))
    simple, complex_ = torch.full((4,), 0.1), torch.full((4,), 0.9)
    ew = expected_weight([0.1] * 5 + [0.9] * 5, np.ones(10))
    assert ew == pytest.approx(0.5)
    for w in (simple, complex_):
        assert torch.allclose(cal_loss(logits, target, w).effective, torch.ones(4))
    lo = cal_loss(logits, target, simple, expected_weight=ew)
    hi = cal_loss(logits, target, complex_, expected_weight=ew)
    assert torch.allclose(lo.effective, torch.full((4,), 0.2)) and torch.allclose(hi.effective, torch.full((4,), 1.8))
    # the effective weight is what the loss really applies: loss = mean(effective · lᵢ)
    losses, _ = per_image_ce(logits, target)
    assert hi.loss.item() == pytest.approx((hi.effective * losses).mean().item(), rel=1e-6)
    # an unweighted batch at the expected weight is the plain mean loss: the lr scale is unchanged
    assert cal_loss(logits, target, torch.full((4,), ew), expected_weight=ew).loss.item() == pytest.approx(
        losses.mean().item(), rel=1e-6)


def test_expected_weight_follows_what_dropping_keeps():
    w = np.array([0.0, 1.0])
    assert expected_weight(w, [1.0, 1.0]) == pytest.approx(0.5)
    assert expected_weight(w, [0.0, 1.0]) == pytest.approx(1.0)   # CASD keeps only the complex one
    assert expected_weight(w, [0.0, 0.0]) == pytest.approx(0.5)   # nothing kept: the plain mean
    assert expected_weight([0.0, 0.0], [1.0, 1.0]) == 1.0         # no weight anywhere: a neutral scale
    with pytest.raises(ValueError, match="expected_weight"):
        cal_loss(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1), expected_weight=0.0)
