"""Prove every registered model step by step: `python align/run_all.py`.

For each model and dtype: data, forward, metric, loss, backward, optimizer, train, on seeded
.npy fixtures and the embedded default weights (seeded, randomized BatchNorm statistics) unless
--torch-ckpt is given. Prints a model x step table, writes DIR/report.json, DIR/report.md with a
per-tap error plot, each side's results in reprod_log format and <step>_diff.log files, and
exits 0 only when everything passed.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import importlib
import json
import time
import traceback

import rsport
from align.harness import DTYPES, STEPS, Context, StepResult
from rsport.registry import VARIANTS, UnknownModelError

ROOT = Path(__file__).resolve().parents[1]

EPILOG = """examples:
  python align/run_all.py                                   # every model, step and dtype
  python align/run_all.py --models factseg50 --dtype float64 --steps forward,backward
  python align/forward.py --models factseg50                # one step alone
  python align/run_all.py --models factseg50 --torch-ckpt factseg50.pth"""


def parse(argv, default_steps):
    parser = argparse.ArgumentParser(prog="align/run_all.py", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all", help="comma-separated registry names (default: %(default)s)")
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
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(known)}")
    return chosen


def run_step(ctx: Context, step: str) -> StepResult:
    start = time.perf_counter()
    try:
        result = importlib.import_module(f"align.{step}").run(ctx)
    except Exception as err:  # noqa: BLE001 - a crashing twin is a failed step, reported, not a crash
        result = StepResult(step, False, first_divergence=_our_frame(err),
                            error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300])
    result.seconds = time.perf_counter() - start
    ctx.write_diff_log(result)
    return result


def _our_frame(err: Exception) -> str:
    """The innermost traceback frame inside this repository: where our code handed over."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(ROOT)]
    where = (ours or frames)[-1]
    path = Path(where.filename).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}:{where.lineno} ({where.name})"


def run(models, steps, dtypes, out: Path, variant="default", torch_ckpt=None, mutate_paddle=None, progress=None):
    """Run the harness; return (reports per dtype, tap rows per (model, dtype))."""
    reports, taps = {}, {}
    total, done = len(models) * len(steps) * len(dtypes), 0
    for dtype in dtypes:
        report = {"passed": True, "dtype": dtype, "variant": variant, "models": {}}
        for name in models:
            ctx = Context(rsport.get(name), dtype, out, variant, torch_ckpt, mutate_paddle)
            entry = {"passed": True, "steps": {}}
            for step in steps:
                done += 1
                if progress:
                    progress(f"[{done}/{total}] {name} {dtype} {step} ...")
                result = run_step(ctx, step)
                entry["steps"][step] = result.summary()
                entry["passed"] &= result.passed
            taps[(name, dtype)] = ctx.cache.get("tap_rows", [])
            report["models"][name] = entry
            report["passed"] &= entry["passed"]
        reports[dtype] = report
    return reports, taps


def table(reports: dict) -> str:
    lines = [f"{'model':<18}{'dtype':<9}{'step':<11}{'max_abs':>11}{'max_rel':>11}  {'verdict':<7} first divergence / note"]
    for dtype, report in reports.items():
        for name, entry in report["models"].items():
            for step, s in entry["steps"].items():
                extra = s["error"] or (s["first_divergence"] if not s["passed"] else s["note"]) or ""
                lines.append(f"{name:<18}{dtype:<9}{step:<11}{s['max_abs']:>11.2e}{s['max_rel']:>11.2e}  "
                             f"{'PASS' if s['passed'] else 'FAIL':<7} {extra}")
    return "\n".join(lines)


def plot_taps(taps: dict, out: Path) -> list[Path]:
    """One PNG per model: relative error of each tap in forward order, one line per dtype."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    written = []
    for name in dict.fromkeys(model for model, _ in taps):
        fig, ax = plt.subplots(figsize=(10, 4))
        for (model, dtype), rows in taps.items():
            if model == name and rows:
                ax.semilogy(range(len(rows)), [max(r.max_rel, 1e-17) for r in rows], marker="o", label=dtype)
                labels = [r.name for r in rows]
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("max |paddle - torch| / max |torch|")
        ax.set_title(f"{name}: per-tap error, forward order")
        ax.legend()
        fig.tight_layout()
        path = out / f"taps_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_reports(reports: dict, taps: dict, out: Path, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for dtype, report in reports.items():
        (out / f"report_{dtype}.json").write_text(json.dumps(report, indent=2) + "\n")
    combined = {"passed": all(r["passed"] for r in reports.values()), "seconds": round(seconds, 1),
                "reports": list(reports.values())}
    (out / "report.json").write_text(json.dumps(combined, indent=2) + "\n")
    pngs = plot_taps(taps, out)
    md = [f"# Alignment report: {'PASSED' if combined['passed'] else 'FAILED'}", "",
          f"Command: `python align/run_all.py` ({seconds:.0f} s). Verdicts use max-abs against the named "
          "tolerance profiles in rsport/tolerances.py; float64 is the strict proof.", "",
          "| model | dtype | step | max_abs | max_rel | verdict | first divergence / note |", "|---|---|---|---|---|---|---|"]
    for dtype, report in reports.items():
        for name, entry in report["models"].items():
            for step, s in entry["steps"].items():
                extra = s["error"] or (s["first_divergence"] if not s["passed"] else s["note"]) or ""
                md.append(f"| {name} | {dtype} | {step} | {s['max_abs']:.2e} | {s['max_rel']:.2e} | "
                          f"{'PASS' if s['passed'] else 'FAIL'} | {extra} |")
    md += ["", *[f"![{p.stem}]({p.name})" for p in pngs]]
    (out / "report.md").write_text("\n".join(md) + "\n")


def main(argv=None, default_steps=STEPS) -> int:
    args = parse(argv, default_steps)
    try:
        models = split(args.models, rsport.names(), "model")
        steps = split(args.steps, STEPS, "step")
        dtypes = split(args.dtype, DTYPES, "dtype")
    except (ValueError, UnknownModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.torch_ckpt is not None and (len(models) != 1 or not args.torch_ckpt.is_file()):
        print(f"error: --torch-ckpt needs one model and an existing file (got {len(models)} models, "
              f"{args.torch_ckpt})", file=sys.stderr)
        return 2
    import warnings

    from convert.core import backend

    # paddle's notice on every train-mode BatchNorm call; it says nothing about alignment
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    for side in ("torch", "paddle"):
        backend(side).set_threads(args.threads)

    def progress(line):
        print(f"\r{line:<70}", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    reports, taps = run(models, steps, dtypes, args.out, args.variant, args.torch_ckpt, progress=progress)
    seconds = time.perf_counter() - start
    print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    write_reports(reports, taps, args.out, seconds)
    print(table(reports))
    passed = all(r["passed"] for r in reports.values())
    print(f"{'PASSED' if passed else 'FAILED'} in {seconds:.0f} s; reports in {args.out}/report.md and report.json")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
