"""Wall time of the alignment harness against its budgets: `python benchmarks/bench_align.py`.

Runs `python align/run_all.py` (every step and dtype, default sizes) in fresh processes, as the
README's main job does, and prints Markdown tables for BENCHMARKS.md:

- the five seed models (factseg50, farseg50, upernet_r50, deeplabv3p_r50, vit_s16_upernet)
  against their 300 s budget and against the 268.8 s measured before automatic taps (issue 12);
- every registered model against the 7-minute budget of issue 13, with each model's share
  (the sum of its steps' seconds in report.json).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import rsport

ROOT = Path(__file__).resolve().parents[1]
SEED_MODELS = ("factseg50", "farseg50", "upernet_r50", "deeplabv3p_r50", "vit_s16_upernet")
BUDGET_SEED, BEFORE_TAPS, BUDGET_ALL = 300.0, 268.8, 420.0


def run(models: list[str], out: Path) -> tuple[float, int, dict[str, float]]:
    """(process wall seconds, exit code, each model's summed step seconds) of one run_all."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "align" / "run_all.py"), "--models", ",".join(models),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    report = json.loads((out / "report.json").read_text())
    per_model: dict[str, float] = {}
    for dtype_report in report["reports"]:
        for name, entry in dtype_report["models"].items():
            per_model[name] = per_model.get(name, 0.0) + sum(s["seconds"] for s in entry["steps"].values())
    return wall, proc.returncode, per_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench_align")
    parser.add_argument("--only", choices=("seed", "all", "both"), default="both",
                        help="which run(s): the five seed models, every model, or both (default: %(default)s)")
    args = parser.parse_args()
    code = 0
    print("| run | what | seconds | budget | ratio | verdict |\n|---|---|---|---|---|---|")
    if args.only in ("seed", "both"):
        wall, rc, _ = run(list(SEED_MODELS), args.out / "seed")
        code |= rc
        print(f"| five seed models | process wall time | {wall:.1f} | {BUDGET_SEED:.0f} | {wall / BUDGET_SEED:.2f} "
              f"| {'passed' if rc == 0 else 'FAILED'}; {wall / BEFORE_TAPS:.2f}x the {BEFORE_TAPS} s before taps |")
    if args.only in ("all", "both"):
        names = rsport.names()
        wall, rc, per_model = run(names, args.out / "all")
        code |= rc
        for name, seconds in per_model.items():
            print(f"| all {len(names)} models | {name}: its 14 steps | {seconds:.1f} | | {seconds / wall:.2f} of the run | |")
        print(f"| all {len(names)} models | process wall time | {wall:.1f} | {BUDGET_ALL:.0f} | {wall / BUDGET_ALL:.2f} "
              f"| {'passed' if rc == 0 else 'FAILED'} |")
    return code


if __name__ == "__main__":
    sys.exit(main())
