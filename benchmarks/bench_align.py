"""Wall time of the alignment harness against its budgets: `python benchmarks/bench_align.py`.

Runs `python align/run_all.py` (every model, step and dtype, default sizes) once, in a fresh
process, as the README's main job does, and prints a Markdown table for BENCHMARKS.md: the
whole run against its 300 s budget, and each model's share (from report.json) against the
90 s budget set for factseg50.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MODEL, BUDGET_ALL = 90.0, 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench_align")
    args = parser.parse_args()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "align" / "run_all.py"), "--out", str(args.out)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    report = json.loads((args.out / "report.json").read_text())
    per_model: dict[str, float] = {}
    for dtype_report in report["reports"]:
        for name, entry in dtype_report["models"].items():
            per_model[name] = per_model.get(name, 0.0) + sum(s["seconds"] for s in entry["steps"].values())
    print("| what | seconds | budget | ratio | verdict |\n|---|---|---|---|---|")
    for name, seconds in per_model.items():
        print(f"| {name}: its 14 steps inside the run | {seconds:.1f} | {BUDGET_MODEL:.0f} | "
              f"{seconds / BUDGET_MODEL:.2f} | |")
    print(f"| `python align/run_all.py` (all models, process wall time) | {wall:.1f} | {BUDGET_ALL:.0f} | "
          f"{wall / BUDGET_ALL:.2f} | {'passed' if proc.returncode == 0 else 'FAILED'} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
