"""Prove every registered model step by step: `python align/run_all.py` (or `rsport align`).

For each model and dtype: data, forward, metric, loss, backward, optimizer, train, on seeded
.npy fixtures and the embedded default weights (seeded, randomized BatchNorm statistics) unless
--torch-ckpt is given. Prints a model x step table, writes DIR/report.json, DIR/report.md with a
per-tap error plot, each side's results in reprod_log format and <step>_diff.log files, and
exits 0 only when everything passed (1: a step failed; 2: bad input: flags, --out, and --torch-ckpt,
which must be readable and fit the model, are checked before any step).
"""
import argparse
import sys
import warnings
from pathlib import Path

from rsport.alignment import DTYPES, STEPS, run_specs
from rsport.cli import CliError, add_model_args, selected_models
from rsport.io import OutputError, check_output
from rsport.registry import VARIANTS

EPILOG = """examples:
  python align/run_all.py                                   # every model, step and dtype
  python align/run_all.py --model factseg50 --dtype float64 --steps forward,backward
  python align/forward.py --model factseg50                 # one step alone
  python align/run_all.py --model factseg50 --torch-ckpt factseg50.pth
  python align/run_all.py --spec my_package.my_spec         # a model from your own package
exit status: 0 every step passed, 1 a step failed, 2 bad input"""


def parse(argv, default_steps, prog="align/run_all.py"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, several=True)
    parser.add_argument("--steps", default=",".join(default_steps), help="comma-separated (default: %(default)s)")
    parser.add_argument("--dtype", default=",".join(DTYPES), help="float32, float64 or both (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("output/align"), help="output folder (default: %(default)s)")
    parser.add_argument("--torch-ckpt", type=Path, help="torch checkpoint to align instead of the embedded "
                                                        "reference (one model only)")
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="model and input size; 'tiny' is for tests (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="math threads per framework (default: %(default)s)")
    return parser.parse_args(argv)


def split(value: str, known, what: str) -> list[str]:
    chosen = list(known) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown or not chosen:
        raise CliError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(known)}")
    return chosen


def main(argv=None, default_steps=STEPS) -> int:
    args = parse(argv, default_steps)
    try:
        models = selected_models(args, several=True)
        steps = split(args.steps, STEPS, "step")
        dtypes = split(args.dtype, DTYPES, "dtype")
        if args.torch_ckpt is not None and len(models) != 1:
            raise CliError(f"--torch-ckpt is one model's file; got {len(models)} models ({', '.join(models[:4])}"
                           f"{', ...' if len(models) > 4 else ''})")
        if args.threads < 1:
            raise CliError(f"--threads must be >= 1, got {args.threads}")
        try:
            check_output(args.out, "folder", "--out")
        except OutputError as err:
            raise CliError(str(err)) from None
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rsport.frameworks import adapter

    if args.torch_ckpt is not None:  # readable and the model's, before any step
        from rsport.registry import get
        from rsport.weights import ConversionError, load_for

        tb = adapter("torch")
        model = tb.build(get(models[0]), args.variant)
        try:
            tb.load_state(model, load_for(get(models[0]), model, "torch", args.torch_ckpt))
        except (ConversionError, tb.StateError) as err:
            print(f"error: --torch-ckpt: {err}", file=sys.stderr)
            return 2
        del model

    # paddle's notice on every train-mode BatchNorm call; it says nothing about alignment
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    for side in ("torch", "paddle"):
        adapter(side).set_threads(args.threads)

    def progress(line):
        print(f"\r{line:<70}", end="", file=sys.stderr, flush=True)

    report = run_specs(models, steps, dtypes, args.out, args.variant, args.torch_ckpt, progress=progress,
                       command="python align/run_all.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    report.write(args.out)
    print(report.table())
    print(f"{'PASSED' if report.passed else 'FAILED'} in {report.seconds:.0f} s; reports in {args.out}/report.md "
          f"and report.json")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
