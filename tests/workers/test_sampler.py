"""The DANCE batch sampler: drop frequencies, identical decisions and disjoint shards across ranks,
one size per batch, no batch of one, resumable position."""
import numpy as np
import pytest
from scipy import stats

from workers.dance.sampler import DanceBatchSampler, drop_mask, eval_batches, plan_epoch

SIZES4 = [(64, 128), (96, 192), (128, 256), (112, 224)]


def make_sizes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [SIZES4[k] for k in rng.integers(0, len(SIZES4), n)]


def test_drop_frequencies_match_probabilities():
    n, epochs = 400, 50
    probs = np.linspace(0.0, 1.0, n)
    counts = sum(drop_mask(probs, seed=7, epoch=e).astype(int) for e in range(epochs))
    assert counts[0] == 0 and counts[-1] == epochs  # p = 0 never, p = 1 always
    # pooled by probability decile: observed vs expected with a binomial two-sided test (fixed seed)
    for lo in range(0, n, 40):
        sl = slice(lo, lo + 40)
        k, trials, pbar = int(counts[sl].sum()), 40 * epochs, float(probs[sl].mean())
        assert stats.binomtest(k, trials, pbar).pvalue > 0.001, (lo, k, trials, pbar)


def test_drops_change_per_epoch_and_repeat_per_seed():
    probs = np.full(200, 0.5)
    a0, a1 = drop_mask(probs, 1, 0), drop_mask(probs, 1, 1)
    assert (a0 != a1).any()
    assert (drop_mask(probs, 1, 0) == a0).all()
    assert (drop_mask(probs, 2, 0) != a0).any()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_agree_and_shards_are_disjoint(world):
    sizes = make_sizes(157)
    probs = np.random.default_rng(3).uniform(0, 0.8, len(sizes))
    samplers = [DanceBatchSampler(sizes, probs, 4, seed=11, rank=r, world_size=world) for r in range(world)]
    for epoch in range(3):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank (DDP)
        seen = [i for batches in per_rank for b in batches for i, *_ in b]
        assert len(seen) == len(set(seen))  # no image twice in an epoch, across ranks
        dropped = set(np.flatnonzero(drop_mask(probs, 11, epoch)).tolist())
        assert not dropped & set(seen)  # dropped images never appear
        plan = samplers[0].plan
        assert len(seen) + plan.dropped + plan.unbatched == len(sizes)
        for batches in per_rank:
            for b in batches:
                assert len(b) >= 2
                assert len({size for _, size, _ in b}) == 1  # one size per batch
                for i, (h, w), _ in b:  # an image is never trained larger than its own CAD size
                    assert h <= sizes[i][0] and w <= sizes[i][1]
        assert [[b[0][1] for b in batches] for batches in per_rank][0] == per_rank_sizes(per_rank)


def per_rank_sizes(per_rank):
    """The size of each step as rank 1 (or 0) sees it: all ranks must agree step by step."""
    return [b[0][1] for b in per_rank[-1]]


def test_no_batch_of_one_even_when_buckets_are_tiny():
    sizes = [(64, 64)] * 3 + [(32, 32)] * 1 + [(48, 48)] * 5
    plan = plan_epoch(sizes, np.zeros(len(sizes)), 2, seed=0, epoch=0, world_size=2)
    for step in plan.batches:
        assert all(len(b) >= 2 for b in step)
    # the three 64x64 images move down into the 48x48 bucket; only the single 32x32 image waits
    assert plan.unbatched == 1 and plan.moved == 3
    assert sorted(plan.sizes) == [(48, 48), (48, 48)]


def test_small_buckets_are_not_starved():
    # every image in a bucket of its own: without moving leftovers down nothing would train
    sizes = [(32 + 8 * k, 64) for k in range(40)]
    plan = plan_epoch(sizes, np.zeros(40), 4, seed=1, epoch=0, world_size=2)
    trained = [i for step in plan.batches for part in step for i in part]
    assert len(trained) + plan.unbatched == 40 and plan.unbatched < 2 * 2
    for step, size in zip(plan.batches, plan.sizes):
        for part in step:
            assert all(size[0] <= sizes[i][0] and size[1] <= sizes[i][1] for i in part)


def test_leftovers_never_enlarge_a_side():
    # portrait and landscape buckets: a smaller area is not smaller on both sides
    sizes = [(480, 352)] * 3 + [(352, 480)] * 4 + [(320, 320)] * 4
    plan = plan_epoch(sizes, np.zeros(len(sizes)), 2, seed=0, epoch=0, world_size=2, shuffle=False)
    for step, size in zip(plan.batches, plan.sizes):
        for part in step:
            for i in part:
                assert size[0] <= sizes[i][0] and size[1] <= sizes[i][1], (i, sizes[i], size)
    trained = sorted(i for step in plan.batches for part in step for i in part)
    assert len(trained) + plan.unbatched == len(sizes) and len(set(trained)) == len(trained)


def test_resume_continues_with_the_same_batches():
    sizes = make_sizes(90)
    probs = np.full(90, 0.3)
    full = DanceBatchSampler(sizes, probs, 3, seed=5)
    full.set_epoch(2)
    expected = list(full)
    first = DanceBatchSampler(sizes, probs, 3, seed=5)
    first.set_epoch(2)
    it = iter(first)
    done = [next(it) for _ in range(4)]
    resumed = DanceBatchSampler(sizes, probs, 3, seed=5)
    resumed.load_state_dict(first.state_dict(steps_done=4))
    assert done + list(resumed) == expected
    with pytest.raises(ValueError, match="seed"):
        DanceBatchSampler(sizes, probs, 3, seed=6).load_state_dict(first.state_dict())


def test_eval_batches_cover_everything_once():
    sizes = make_sizes(41)
    covered = [i for r in range(3) for b in eval_batches(sizes, 4, r, 3) for i in b]
    assert sorted(covered) == list(range(41))
    for b in eval_batches(sizes, 4):
        assert len({sizes[i] for i in b}) == 1


@pytest.mark.parametrize("world", [1, 2])
def test_cad_levels_keep_cityscapes_batches_full(world):
    """DESIGN §3: 2,975 images of 1024x2048, batch 8, quantum 16: mean batch fill >= 95 % with the
    default CAD levels, where the continuous ratio leaves batches well short of full."""
    from workers.dance.batch_fill import simulated_fill
    from workers.dance.slimming import SlimmingConfig

    continuous = simulated_fill(2975, (1024, 2048), 8, world, SlimmingConfig(cad_levels=None), 16)
    levels = simulated_fill(2975, (1024, 2048), 8, world, SlimmingConfig(), 16)
    # ~97 buckets with a per-side snap; ~31 once both sides follow one scale: still short of full
    assert continuous.buckets > 25 and continuous.fill < 0.94
    assert levels.buckets <= 6 and levels.fill >= 0.95


def test_batch_fill_counts_partial_batches():
    sizes = [(64, 128)] * 10 + [(32, 64)] * 6
    plan = plan_epoch(sizes, np.zeros(16), 4, seed=0, epoch=0, world_size=1, shuffle=False)
    # 10 big: 4 + 4 + 2, 6 small: 4 + 2 -> 16 images in 5 steps of 4
    assert plan.trained == 16 and len(plan.batches) == 5
    assert plan.batch_fill(4) == pytest.approx(16 / 20)


def test_fill_moves_partial_batches_down_and_loses_nothing():
    sizes = make_sizes(157)
    probs = np.random.default_rng(3).uniform(0, 0.5, len(sizes))
    for world in (1, 2):
        a = plan_epoch(sizes, probs, 4, seed=1, epoch=0, world_size=world)
        b = plan_epoch(sizes, probs, 4, seed=1, epoch=0, world_size=world, fill=True)
        # only the smallest bucket can leave images out (fewer than min_batch × ranks), as without fill
        assert (b.trained >= a.trained - (2 * world - 1) and b.unbatched < 2 * world
                and b.batch_fill(4) >= a.batch_fill(4))
        smallest = min(set(b.sizes), key=lambda s: s[0] * s[1])
        partial = {sz for sz, batch in zip(b.sizes, b.batches) if sum(map(len, batch)) < 4 * world}
        assert partial <= {smallest}
        # every image still goes to a bucket no larger on either side than its own size
        assert all(sizes[i][0] >= sz[0] and sizes[i][1] >= sz[1] for sz, batch in zip(b.sizes, b.batches)
                   for part in batch for i in part)


def test_step_budget_refills_dropping_epochs_to_the_baseline_step_count():
    """drop_budget: steps — dropping decides which images are seen, not how many steps are taken."""
    from workers.dance.sampler import baseline_steps

    n, batch = 60, 4
    sizes = [(64, 128)] * 30 + [(32, 64)] * 30
    keep = np.linspace(0.05, 1.0, n)  # CASD: complex images are kept more often
    drop = 1.0 - keep
    target = baseline_steps(n, batch)
    assert target == 15
    short = plan_epoch(sizes, drop, batch, seed=3, epoch=0)
    full = plan_epoch(sizes, drop, batch, seed=3, epoch=0, target_steps=target)
    assert len(short.batches) < target and len(full.batches) == target and full.refilled > 0
    assert full.dropped == short.dropped  # the epoch's own draw is unchanged
    seen = np.bincount([i for b in full.batches for part in b for i in part], minlength=n)
    # images are seen in proportion to their chance of being kept: the most complex third far more
    assert seen[40:].sum() > 3 * seen[:20].sum()
    # deterministic, and equal across world sizes in its step count
    again = plan_epoch(sizes, drop, batch, seed=3, epoch=0, target_steps=target)
    assert again.batches == full.batches
    two = plan_epoch(sizes, drop, 2, seed=3, epoch=0, world_size=2, target_steps=baseline_steps(n, 2, world_size=2))
    assert len(two.batches) == 15


def test_step_budget_never_loops_forever_when_everything_is_dropped():
    plan = plan_epoch([(32, 32)] * 8, np.ones(8), 2, seed=0, epoch=0, target_steps=4)
    assert plan.batches == [] and plan.refilled == 0
