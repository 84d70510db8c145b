"""`dance export CHECKPOINT --format onnx|torchscript --out DIR [--buckets HxW,...]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.checkpoints import checkpoint_file
from orchestrator.errors import UserError
from orchestrator.progress import progress_bar

DESCRIPTION = """\
Export a trained (possibly ANS-pruned) checkpoint for on-device measurement: one file per
input-resolution bucket, static shapes, batch 1, plus manifest.json.

  onnx         opset <= 13 (TensorRT 8.2 on Jetson TX2); input "input" (1,3,H,W) float32,
               output "logits" (1,C,H,W). Each file is checked with onnx.checker and against
               PyTorch in onnxruntime (max |diff| <= 1e-4 x max(1, max|logit|)).
  torchscript  torch.jit.trace per bucket, eval-mode BatchNorm, for on-device training.

Buckets default to the CAD-quantised sizes of the validation images of the dataset in the
checkpoint's training config (fraction = share of images per size); without such a config
give --buckets.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript, one file per size bucket",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path,
                   help="checkpoint written by training: model.pt or the checkpoint folder holding it")
    p.add_argument("--format", dest="fmt", choices=["onnx", "torchscript"], default="onnx",
                   help="output format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; files are overwritten)")
    p.add_argument("--buckets", default=None, metavar="HxW[:FRAC],...",
                   help="input sizes to export, e.g. 512x1024,256x512 (equal shares) or 512x1024:0.7,256x512:0.3; "
                        "default: from the checkpoint's dataset")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset, at most 13 (default 13)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime / TorchScript output check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workers.checkpoint import CheckpointError
    from workers.export import ExportError, export_checkpoint, parse_buckets

    try:
        buckets = parse_buckets(args.buckets) if args.buckets is not None else None
    except ExportError as exc:
        raise UserError(str(exc)) from None
    args.checkpoint = checkpoint_file(args.checkpoint)  # a file, or a Ray checkpoint folder holding model.pt
    if args.opset > 13 or args.opset < 7:
        raise UserError(f"--opset must lie in [7, 13] (TensorRT 8.2 on a TX2 reads at most 13), got {args.opset}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        with progress_bar("scoring validation images") as progress:
            result = export_checkpoint(args.checkpoint, args.out, args.fmt, buckets, opset=args.opset,
                                       verify=not args.no_verify, log=log, progress=progress)
    except (CheckpointError, ExportError) as exc:
        raise UserError(str(exc)) from None
    m = result.manifest
    print(f"exported {len(m['buckets'])} {m['format']} file(s) to {result.out_dir}")
    for b, c in zip(m["buckets"], result.checks):
        check = f"  max|diff| {c['max_abs_diff']:.2e}" if "max_abs_diff" in c else ""
        print(f"  {b['file']:<28} {b['height']:>5}x{b['width']:<5} {100 * b['fraction']:5.1f}% of images{check}")
    print(f"manifest: {result.out_dir / 'manifest.json'}")
    return 0
