"""Export a registered model to Paddle static (PIR + legacy) and ONNX, checked; see --help."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import rsport
from rsport.cli import CliError, add_model_args, selected_models
from rsport.io import OutputError, check_output
from rsport.registry import VARIANTS

warnings.filterwarnings("ignore", message="No ccache found")  # paddle's import-time notice, not ours

EXAMPLES = """examples:
  python deploy/export.py --model factseg50 --out output/deploy/factseg50         # embedded seeded reference
  python deploy/export.py --model factseg50 --weights factseg50.pth --out output/deploy/factseg50
  python deploy/export.py --model farseg50 --weights farseg50.pdparams --out output/deploy/farseg50 --format paddle
  python deploy/export.py --model vit_s16_upernet --variant tiny --out output/deploy/vit_tiny
  python deploy/export.py --spec my_package.my_spec --out output/deploy/mine       # a model from your own package
  python deploy/export.py --model factseg50 --precision fp32,bf16,int8 --out output/deploy/factseg50   # gate weights
  python deploy/export.py --model factseg50 --weights trained.pth --precision int8 --gate-data /data/isaid --out DIR

writes OUT/deploy.yaml, OUT/export_report.json and the artifacts:
  paddle: model.json + model.pdiparams (PIR), legacy/model.pdmodel + legacy/model.pdiparams
  onnx:   model_paddle.onnx (paddle2onnx), model_torch.onnx (torch.onnx.export), opset 17
  int8:   model_int8.onnx (static QDQ, calibrated on the gate data's training windows)
  bf16:   no new file: model_torch.onnx in OpenVINO with the bf16 precision hint
reduced precision is gated: on the gate data's val scenes with trained weights (--weights, or
the gate weights trained once under output/gate/<model>/), the class map must agree with fp32 on
>= 99.9% of pixels, only at fp32 top-2 margins below the precision's bound, mIoU within 0.1 point.
exit status: 0 all artifacts match the dynamic model and pass the gate, 1 a check or the gate
failed (nothing written), 2 bad input (or a CPU without the precision's instructions)"""


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy/export.py",
        description="Export a registered model with dynamic batch, height and width; reload every artifact "
                    "with the runtime that serves it (Paddle Inference with and without oneDNN, ONNX Runtime) "
                    "and compare it with the dynamic model on two seeded fixtures under the model's fp32 "
                    "tolerance profile. The output directory appears only when every check passes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, required=True, positional=True)
    parser.add_argument("--weights", type=Path, default=None,
                        help="paddle .pdparams or torch .pth (converted through convert/'s rules); "
                             "default: the embedded seeded reference")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory, written only on success; in an existing one a previous export "
                             "is replaced and other files (e.g. trained weights) are kept")
    parser.add_argument("--format", default="paddle,onnx",
                        help="comma-separated subset of: paddle, onnx (default: %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="model size; 'tiny' is the CI-sized variant (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the embedded reference when no --weights (default: 2333)")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated subset of fp32, bf16, int8; fp32 is always written (default: %(default)s)")
    parser.add_argument("--gate-data", type=Path, default=None,
                        help="data root of the accuracy gate (val split) and the int8 calibration (train split) "
                             "(default: the embedded sample data)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the checks (default: %(default)s)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let torch unpickle arbitrary objects (only for .pth files you trust)")
    parser.add_argument("--no-torch", action="store_true",
                        help="export from paddle alone: no model_torch.onnx and no twins check, torch never "
                             "imported (default: use torch when the formats include onnx and torch is installed)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    precisions = list(dict.fromkeys(["fp32"] + [p.strip() for p in args.precision.split(",") if p.strip()]))
    try:
        spec = rsport.get(selected_models(args)[0])
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from deploy.exporter import FORMATS, ExportError, export, summary

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        print(f"error: unknown format {','.join(bad) or args.format!r}; known: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    if args.weights is not None and not args.weights.is_file():
        print(f"error: {args.weights}: no such weights file", file=sys.stderr)
        return 2
    if args.gate_data is not None and not args.gate_data.is_dir():
        print(f"error: --gate-data {args.gate_data}: no such folder", file=sys.stderr)
        return 2
    try:
        check_output(args.out, "folder", "--out")
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        report = export(spec, args.out, variant=args.variant, weights=args.weights, formats=formats,
                        seed=args.seed, allow_pickle=args.allow_pickle, threads=args.threads,
                        with_torch=False if args.no_torch else None, precisions=precisions, gate_data=args.gate_data)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
