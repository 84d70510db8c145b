"""Paper §3.2 in the data pipeline: per-epoch drops and size-bucketed batches.

Every epoch, each image is dropped with its own probability (CASD or RD) using a
generator seeded by (seed, epoch) and indexed by image, so every worker makes the same
decisions. Kept images are bucketed by their CAD size (one size per batch, never padded
back up), each bucket is cut into *global* batches of ``batch_size × world_size``, and
each global batch is split evenly across ranks: every rank runs the same number of
steps (DDP needs that), no image appears twice in an epoch, and no rank ever gets a
batch smaller than ``min_batch`` (BatchNorm cannot train on a batch of one).

A bucket's last few images, too few for such a batch, move down to the next smaller
bucket that is no larger on either side, and are trained at its size (slightly more
downsampling than their own CAD ratio; never padding, never enlarging a side); what
finds no such bucket waits for the next epoch, counted as ``unbatched``. Without the move, a bucket holding fewer than
``min_batch × world_size`` images would never be trained at all.

With a step budget (``drop_budget: steps``, the default; DESIGN §3), dropping decides *which*
images an epoch sees, not how many steps it takes: after the epoch's own draw, further
seeded draws ("refill rounds") add kept images until the epoch has the baseline's number of
steps, and surplus steps are cut at random. An image can then appear more than once in an
epoch, with a frequency proportional to its chance of being kept.

The sampler yields ``(index, (height, width), draw key)`` so the dataset resizes each image
to the size of the batch it was placed in (and seeds its augmentation by the key).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

Size = tuple[int, int]


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does: ``batches[step][rank]`` is a list of image indices, all
    trained at ``sizes[step]``; ``moved`` images were placed in a smaller bucket than their own."""

    epoch: int
    batches: list[list[list[int]]]
    sizes: list[Size]
    dropped: int
    unbatched: int
    moved: int
    total: int
    refilled: int = 0  # images added by refill rounds to reach the step budget (trained or not)

    @property
    def dropped_fraction(self) -> float:
        return self.dropped / self.total if self.total else 0.0

    @property
    def trained(self) -> int:
        """Images placed in a batch this epoch (all ranks)."""
        return sum(len(part) for batch in self.batches for part in batch)

    def batch_fill(self, batch_size: int) -> float:
        """Mean fill of the epoch's batches: images trained / (steps × batch_size × ranks); 1.0 without steps."""
        if not self.batches:
            return 1.0
        return self.trained / (len(self.batches) * batch_size * len(self.batches[0]))


MAX_REFILL_ROUNDS = 64  # a step budget that needs more draws than this is left short (nearly everything dropped)


def drop_mask(drop_prob: np.ndarray, seed: int, epoch: int, round_: int = 0) -> np.ndarray:
    """True where an image is dropped in this epoch's draw ``round_`` (0: the epoch's own; more: refills)."""
    key = [seed, epoch, 0xD0] if round_ == 0 else [seed, epoch, 0xD0, round_]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    return rng.random(len(drop_prob)) < np.asarray(drop_prob)


def baseline_steps(n: int, batch_size: int, *, world_size: int = 1, min_batch: int = 2) -> int:
    """Steps of an epoch over ``n`` images of one size, none dropped: the step budget of ``drop_budget: steps``."""
    plan = plan_epoch([(1, 1)] * n, np.zeros(n), batch_size, seed=0, epoch=0, world_size=world_size,
                      min_batch=min_batch, shuffle=False)
    return len(plan.batches)


def plan_epoch(
    sizes: Sequence[Size],
    drop_prob: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    world_size: int = 1,
    min_batch: int = 2,
    shuffle: bool = True,
    fill: bool = False,
    target_steps: int | None = None,
) -> EpochPlan:
    """Build the whole epoch's batch plan for all ranks (deterministic in its arguments).

    With ``fill`` a bucket's partial last batch also moves down (when a smaller bucket that
    fits exists), so only the smallest bucket's last batch can be partial: full batches at
    the price of a few images per bucket trained one size level smaller. With
    ``target_steps`` the epoch is refilled (or cut) to that many steps (see the module doc).
    """
    if batch_size < min_batch:
        raise ValueError(f"batch_size ({batch_size}) must be at least min_batch ({min_batch})")
    n = len(sizes)
    dropped = drop_mask(drop_prob, seed, epoch)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0xB0]))
    pool = np.flatnonzero(~dropped).tolist()
    steps, unbatched = _bucket_batches(sizes, pool, batch_size, world_size, min_batch, fill, shuffle, rng)
    refilled, round_ = 0, 1
    while target_steps is not None and len(steps) < target_steps and round_ <= MAX_REFILL_ROUNDS:
        extra = np.flatnonzero(~drop_mask(drop_prob, seed, epoch, round_)).tolist()
        round_ += 1
        if not extra:
            continue
        pool += extra
        refilled += len(extra)
        steps, unbatched = _bucket_batches(sizes, pool, batch_size, world_size, min_batch, fill, shuffle, rng)
    if shuffle:
        steps = [steps[i] for i in rng.permutation(len(steps))]
    if target_steps is not None and len(steps) > target_steps:
        # The surplus goes after the shuffle, so at random, but partial batches first: full steps as the baseline's.
        per_global = batch_size * world_size
        partial = {k for k, (_, b) in enumerate(steps) if sum(map(len, b)) < per_global}
        order = sorted(range(len(steps)), key=lambda k: (k not in partial, -k))  # partial ones, then from the end
        cut = set(order[:len(steps) - target_steps])
        steps = [st for k, st in enumerate(steps) if k not in cut]
    moved = sum(tuple(sizes[i]) != size for size, batch in steps for part in batch for i in part)
    return EpochPlan(epoch, [b for _, b in steps], [sz for sz, _ in steps], int(dropped.sum()), unbatched, moved, n,
                     refilled)


def _bucket_batches(sizes: Sequence[Size], pool: list[int], batch_size: int, world_size: int, min_batch: int,
                    fill: bool, shuffle: bool, rng: np.random.Generator,
                    ) -> tuple[list[tuple[Size, list[list[int]]]], int]:
    """Cut ``pool`` (image indices, repeats allowed) into one-size global batches → (steps, images left over)."""
    buckets: dict[Size, list[int]] = {}
    for i in pool:
        buckets.setdefault(tuple(sizes[i]), []).append(i)
    steps: list[tuple[Size, list[list[int]]]] = []
    waiting: list[int] = []  # leftovers looking for a bucket no larger on either side than their own size
    per_global = batch_size * world_size
    order = sorted(buckets, key=lambda s: (s[0] * s[1], s), reverse=True)  # largest first
    for j, size in enumerate(order):
        # a smaller bucket no larger on either side exists: a partial batch here can move down to it
        can_move = fill and any(o[0] <= size[0] and o[1] <= size[1] for o in order[j + 1:])
        fits = [i for i in waiting if sizes[i][0] >= size[0] and sizes[i][1] >= size[1]]
        waiting = [i for i in waiting if not (sizes[i][0] >= size[0] and sizes[i][1] >= size[1])]
        own = np.asarray(buckets[size], dtype=np.int64)
        if shuffle:
            own = rng.permutation(own)
        members = np.concatenate([np.asarray(fits, dtype=np.int64), own])
        for start in range(0, len(members), per_global):
            chunk = members[start:start + per_global]
            share = len(chunk) // world_size
            if share < min_batch or (can_move and len(chunk) < per_global):
                waiting.extend(chunk.tolist())
                continue
            waiting.extend(chunk[share * world_size:].tolist())
            steps.append((size, [chunk[r * share:(r + 1) * share].tolist() for r in range(world_size)]))
    return steps, len(waiting)


class DanceBatchSampler:
    """A ``batch_sampler`` for ``torch.utils.data.DataLoader`` yielding this rank's batches.

    Resumable: :meth:`state_dict` records the epoch and how many steps of it were done,
    and the plan is a pure function of (seed, epoch), so a resumed run continues with
    exactly the batches it would have had.
    """

    def __init__(
        self,
        sizes: Sequence[Size],
        drop_prob: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        min_batch: int = 2,
        shuffle: bool = True,
        fill: bool = False,
        target_steps: int | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.sizes = [tuple(s) for s in sizes]
        self.drop_prob = np.asarray(drop_prob, dtype=np.float64)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.min_batch, self.shuffle, self.fill, self.target_steps = min_batch, shuffle, fill, target_steps
        self.epoch, self.start_step = 0, 0
        self._plan: EpochPlan | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start_step, self._plan = epoch, 0, None

    @property
    def plan(self) -> EpochPlan:
        if self._plan is None or self._plan.epoch != self.epoch:
            self._plan = plan_epoch(
                self.sizes, self.drop_prob, self.batch_size, seed=self.seed, epoch=self.epoch,
                world_size=self.world_size, min_batch=self.min_batch, shuffle=self.shuffle, fill=self.fill,
                target_steps=self.target_steps,
            )
        return self._plan

    def __len__(self) -> int:
        return len(self.plan.batches) - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, Size, int]]]:
        plan = self.plan
        for n, (step, size) in enumerate(zip(plan.batches[self.start_step:], plan.sizes[self.start_step:])):
            # The draw key tells apart an image's draws (augmentation) by epoch, step and slot.
            base = (self.epoch << 40) | ((self.start_step + n) << 12)
            yield [(i, size, base | slot) for slot, i in enumerate(step[self.rank])]

    def state_dict(self, steps_done: int = 0) -> dict:
        """Position to resume from: ``steps_done`` steps of the current epoch are finished."""
        return {"seed": self.seed, "epoch": self.epoch, "step": self.start_step + steps_done}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.epoch, self.start_step, self._plan = int(state["epoch"]), int(state["step"]), None


def eval_batches(sizes: Sequence[Size], batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Evaluation batches for one rank: every image exactly once across ranks, one size per batch."""
    mine = [i for i in range(len(sizes)) if i % world_size == rank]
    buckets: dict[Size, list[int]] = {}
    for i in mine:
        buckets.setdefault(tuple(sizes[i]), []).append(i)
    return [b[j:j + batch_size] for s in sorted(buckets) for b in [buckets[s]] for j in range(0, len(b), batch_size)]
