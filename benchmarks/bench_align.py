"""Wall time of the alignment harness against its budget: `python benchmarks/bench_align.py`.

Runs `python align/run_all.py --models M` (every step, both dtypes, default sizes) in a fresh
process per model, as a user would, and prints a Markdown table for BENCHMARKS.md: seconds and
the ratio to the budget (factseg50 alone: 90 s; the whole registry: 300 s).
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rsport  # noqa: E402

BUDGET_ONE, BUDGET_ALL = 90.0, 300.0


def timed(args, out):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "align" / "run_all.py"), *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench_align")
    args = parser.parse_args()
    rows, total, status = [], 0.0, 0
    for name in rsport.names():
        seconds, code = timed(["--models", name], args.out / name)
        total += seconds
        status |= code
        rows.append(f"| `python align/run_all.py --models {name}` | {seconds:.1f} | {BUDGET_ONE:.0f} | "
                    f"{seconds / BUDGET_ONE:.2f} | {'passed' if code == 0 else 'FAILED'} |")
    rows.append(f"| all models, one process each | {total:.1f} | {BUDGET_ALL:.0f} | {total / BUDGET_ALL:.2f} | |")
    print("| command | seconds | budget | ratio | verdict |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
