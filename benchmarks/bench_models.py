"""Benchmark: the four paper models before/after ANS, latency, and Eqs. 3/4 against counted FLOPs.

    .venv/bin/python benchmarks/bench_models.py [--models deeplabv3plus pspnet ...]
        [--latency-size 256x512] [--repeats 5] [--images 32] [--no-latency]

Three tables:

1. Per model (paper configuration, 19 classes, 512×1024 input): parameters, forward GFLOPs
   (counted, FLOPs = 2·MACs) and the header's share of them, before and after pruning the
   header to 50% of its prunable channels (ANS, S = 6 stages, r = 0.5).
2. Latency before/after pruning, PyTorch eager and onnxruntime, CPU, batch 1, one thread,
   at ``--latency-size`` (512×1024 takes 5–15 s per PSPNet forward on the 2 shared cores of
   the dev box, so the default is 256×512). Before and after runs alternate; the fall is the
   median of the paired after/before ratios (robust to the load drifting on a shared box).
   The goal: the latency falls by at least 80% of the counted-FLOPs fall. Also the max
   |ONNX − PyTorch| of the exports.
3. Paper Eq. 3 / Eq. 4 (as printed, and the consistent Eq. 4), the refined predictor (header
   share and pruned-header FLOP fraction, quantised sizes) against counted FLOPs over
   ``--images`` Cityscapes-sized (1024×2048) images whose p are the quantiles of U(0, 1) —
   what a well-fitted CDF gives on its training set.

The models are randomly initialised, so sparse training is simulated: every BatchNorm scale γ
is set to a seeded uniform random value before pruning, which defines the |γ| ranking (with
the initial γ = 1 ties, ANS refuses to prune).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.cost import count_flops  # noqa: E402
from workers.dance import cost_model as cm  # noqa: E402
from workers.dance.ans import ANSConfig, NetworkSlimmer  # noqa: E402
from workers.dance.slimming import SlimmingConfig, dance_sizes, drop_probability  # noqa: E402
from workers.models import build_model  # noqa: E402

MODELS = ["deeplabv3plus", "pspnet", "icnet", "bisenet"]
SIZE = (512, 1024)
IMAGE = (1024, 2048)
R, S = 0.5, 6


def randomise_gammas(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.01)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def paired_latency(before, after, repeats: int, seconds: float) -> tuple[float, float, float, int]:
    """(median before, median after, median of the paired after/before ratios [s], pairs run).

    Runs alternate before/after, and the fall is taken from the ratio of each adjacent pair:
    on a shared machine the load drifts, and adjacent runs see nearly the same load. Fast
    models get more pairs (up to ``seconds`` of timing), since their falls are small.
    """
    t = time.perf_counter()
    before(), after()  # warm-up: allocations, oneDNN primitives, ORT arenas
    pair = time.perf_counter() - t
    n = int(min(200, max(repeats, seconds / max(pair, 1e-3))))
    tb, ta = [], []
    for _ in range(n):
        for fn, acc in ((before, tb), (after, ta)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(tb), statistics.median(ta), statistics.median(a / b for a, b in zip(ta, tb)), n


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle ORT threads spin by default and would steal the cores from the PyTorch timings.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def cost_row(name, p, keep_prob, sizes, slim_cfg, model, base_model, base_full, base_train_full, header_q,
             train_counted) -> dict:
    """Paper Eqs. 3/4, their refined forms, and the counted reductions for one model."""
    q, lo = model.size_quantum, model.min_size
    n = len(p)
    infer_counted = sum(count_flops(model, *sz).forward for sz in sizes) / (n * base_full.forward)
    h = base_full.share("header")
    infer_refined = cm.predict_inference_fraction(p, slim_cfg, [IMAGE] * n, h, header_q[-1], quantum=q, min_size=lo)
    # Algorithm 1's timing: stage s trains the structure pruned s−1 times (stage 1: unpruned).
    first = sum(k * count_flops(base_model, *sz, backward=True).train for k, sz in zip(keep_prob, sizes))
    train_alg1 = (first + sum(train_counted[:-1])) / S / (n * base_train_full.train)
    train_counted_frac = sum(train_counted) / S / (n * base_train_full.train)
    train_refined = cm.predict_training_fraction(p, slim_cfg, [IMAGE] * n, h, header_q, quantum=q, min_size=lo)
    return {
        "name": name, "h": h, "q": header_q[-1],
        "eq3": cm.paper_eq3(p, R), "eq3_refined": 1 - infer_refined, "eq3_counted": 1 - infer_counted,
        "eq4": cm.paper_eq4(p, R, S), "eq4_consistent": cm.training_reduction(p, slim_cfg, R, S),
        "eq4_refined": 1 - train_refined, "eq4_counted": 1 - train_counted_frac, "eq4_alg1": 1 - train_alg1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--latency-size", default="256x512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0, help="timing budget per model and runtime; fast "
                    "models get more than --repeats pairs")
    ap.add_argument("--images", type=int, default=32)
    # One thread: on a shared 2-core box, 2-thread OpenMP runs stall at barriers whenever another
    # process holds a core (5-20x slower, wildly variable); 1 thread stays stable.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channel-multiple", type=int, default=1, help="ANS channel_multiple (1 = exact r)")
    ap.add_argument("--no-latency", action="store_true", help="skip table 2")
    ap.add_argument("--no-cost", action="store_true", help="skip table 3 (the training-FLOP counts are the slow part)")
    args = ap.parse_args()
    lat_size = tuple(int(v) for v in args.latency_size.split("x"))
    torch.set_num_threads(args.threads)
    slim_cfg = SlimmingConfig()
    p = (np.arange(args.images) + 0.5) / args.images
    keep_prob = 1.0 - drop_probability(p, slim_cfg)
    t_start = time.time()

    rows, lat_rows, cost_rows = [], [], []
    for name in args.models:
        t0 = time.time()
        model = build_model(name, num_classes=19, variant="paper").eval()
        randomise_gammas(model)
        q, lo = model.size_quantum, model.min_size
        sizes = dance_sizes([IMAGE] * len(p), p, slim_cfg, q, lo)
        base_model = copy.deepcopy(model)
        base = count_flops(model, *SIZE)
        base_full = count_flops(model, *IMAGE)
        base_train_full = count_flops(model, *IMAGE, backward=True)
        slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=1 - R, stages=S, channel_multiple=args.channel_multiple),
                                 example_input_size=(lo * 2, lo * 2))
        header_q, train_counted = [], []
        for s in range(1, S + 1):
            slimmer.step()
            header_q.append(count_flops(model, *IMAGE).parts["header"] / base_full.parts["header"])
            if not args.no_cost:
                # Expected training FLOPs of one epoch in stage s (Eq. 4's indexing: r^(s/S)).
                train_counted.append(sum(k * count_flops(model, *sz, backward=True).train
                                         for k, sz in zip(keep_prob, sizes)))
        after = count_flops(model, *SIZE)
        rows.append((name, params(base_model), params(model), base, after, slimmer.header_channels_kept()))

        # --- Eqs. 3 / 4 against counted FLOPs
        if not args.no_cost:
            cost_rows.append(cost_row(name, p, keep_prob, sizes, slim_cfg, model, base_model, base_full,
                                      base_train_full, header_q, train_counted))

        # --- latency, PyTorch and onnxruntime
        if not args.no_latency:
            from workers.export import Bucket, export_model

            x = torch.randn(1, 3, *lat_size)
            xn = x.numpy()
            f_before, f_after = count_flops(base_model, *lat_size).forward, count_flops(model, *lat_size).forward
            with tempfile.TemporaryDirectory() as d:
                bucket = [Bucket(*lat_size, 1.0)]
                eb = export_model(base_model, Path(d) / "before", "onnx", bucket)
                ea = export_model(model, Path(d) / "after", "onnx", bucket)
                fname = eb.manifest["buckets"][0]["file"]
                sb = ort_session(Path(d) / "before" / fname, args.threads)
                sa = ort_session(Path(d) / "after" / fname, args.threads)
                with torch.inference_mode():
                    med = {"pt": paired_latency(lambda: base_model(x), lambda: model(x), args.repeats, args.seconds)}
                med["ort"] = paired_latency(lambda: sb.run(["logits"], {"input": xn}),
                                            lambda: sa.run(["logits"], {"input": xn}), args.repeats, args.seconds)
            lat_rows.append((name, f_before, f_after, med,
                             max(eb.checks[0]["max_abs_diff"], ea.checks[0]["max_abs_diff"]),
                             max(eb.checks[0]["relative"], ea.checks[0]["relative"])))
        print(f"[{name}: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)

    g = 1e9
    print(f"\n1. Paper configurations, 19 classes, input {SIZE[0]}x{SIZE[1]}, header pruned to r = {R} "
          f"(ANS, S = {S}); FLOPs counted with FlopCounterMode (FLOPs = 2 x MACs)")
    print(f"{'model':<14}{'params':>9}{'->':>3}{'pruned':>8}{'GFLOPs':>9}{'->':>3}{'pruned':>8}{'fall':>7}"
          f"{'header share':>14}{'->':>3}{'pruned':>8}{'hdr ch kept':>13}")
    for name, pb, pa, b, a, kept in rows:
        print(f"{name:<14}{pb / 1e6:>8.2f}M{'':>3}{pa / 1e6:>7.2f}M{b.forward / g:>9.1f}{'':>3}{a.forward / g:>8.1f}"
              f"{100 * (1 - a.forward / b.forward):>6.1f}%{100 * b.share('header'):>13.2f}%{'':>3}"
              f"{100 * a.share('header'):>7.2f}%{100 * kept:>12.1f}%")

    if lat_rows:
        print(f"\n2. CPU latency, batch 1, {lat_size[0]}x{lat_size[1]}, {args.threads} threads, at least "
              f"{args.repeats} alternating before/after pairs (goal: latency fall >= 80% of the FLOPs fall)")
        print(f"{'model':<14}{'FLOPs fall':>11}{'torch ms':>10}{'->':>3}{'pruned':>8}{'fall':>7}{'/FLOPs':>8}"
              f"{'ORT ms':>9}{'->':>3}{'pruned':>8}{'fall':>7}{'/FLOPs':>8}{'ONNX max|d|':>13}{'rel':>9}"
              f"{'pairs':>7}{'':>5}")
        for name, fb, fa, med, diff, rel in lat_rows:
            ff = 1 - fa / fb
            (pb, pa, pr, pn), (ob, oa, orr, on) = med["pt"], med["ort"]
            print(f"{name:<14}{100 * ff:>10.1f}%{1e3 * pb:>10.0f}{'':>3}{1e3 * pa:>8.0f}{100 * (1 - pr):>6.1f}%"
                  f"{(1 - pr) / ff:>8.2f}{1e3 * ob:>9.0f}{'':>3}{1e3 * oa:>8.0f}{100 * (1 - orr):>6.1f}%"
                  f"{(1 - orr) / ff:>8.2f}{diff:>13.1e}{rel:>9.1e}{pn:>7}{on:>5}")
        print("fall = 1 - median of the paired after/before ratios; /FLOPs = latency fall / FLOPs fall")

    if cost_rows:
        print(f"\n3. Cost reduction vs the unslimmed baseline, {args.images} images of {IMAGE[0]}x{IMAGE[1]}, "
              f"p = quantiles of U(0,1), CAD [0.5, 1], CASD 1-p, r = {R}, S = {S}")
        print(f"{'model':<14}{'h':>7}{'q':>7} | {'Eq3':>7}{'refined':>9}{'counted':>9} | {'Eq4':>7}{'Eq4 cons.':>10}"
              f"{'refined':>9}{'counted':>9}{'Alg.1':>8}")
        for c in cost_rows:
            print(f"{c['name']:<14}{c['h']:>7.3f}{c['q']:>7.3f} | {100 * c['eq3']:>6.1f}%"
                  f"{100 * c['eq3_refined']:>8.1f}%"
                  f"{100 * c['eq3_counted']:>8.1f}% | {100 * c['eq4']:>6.1f}%{100 * c['eq4_consistent']:>9.1f}%"
                  f"{100 * c['eq4_refined']:>8.1f}%{100 * c['eq4_counted']:>8.1f}%{100 * c['eq4_alg1']:>7.1f}%")
        print("h = header share of forward FLOPs (unpruned), q = pruned header's FLOP fraction; Eq3/Eq4 = as printed "
              "in the paper; 'Eq4 cons.' = 1 - p(0.5p+0.5)^2 r^(s/S); refined = area x (1 - h + h q); counted = "
              "FlopCounterMode on every quantised size and stage structure (training: forward + backward, expected "
              "over CASD drops); Alg.1 = counted with stage s training the structure pruned s-1 times.")
    print(f"\ntotal {time.time() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
