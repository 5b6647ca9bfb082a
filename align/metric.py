"""Step `metric`: both sides' metric code on the same predictions and labels: the confusion
matrix exactly equal, per-class IoU, mIoU, mIoU-fg, OA and kappa equal to a few ulps (profile
`metric`: paddle's float64 division is not correctly rounded); and each side's own argmax
predictions agree on >= 99.99% of pixels with every disagreement at a near-tie of the top two
scores."""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from align.forward import eval_pass
from align.harness import StepResult, compare_all
from rsport.compare import Diff

STEP = "metric"
MIN_AGREEMENT = 0.9999
NEAR_TIE = {"float32": 1e-4, "float64": 1e-9}  # top-2 margin under which a flip is a tie


def argmax_agreement(t_scores: np.ndarray, p_scores: np.ndarray, near_tie: float) -> Diff:
    t_pred, p_pred = t_scores.argmax(axis=1), p_scores.argmax(axis=1)
    differ = t_pred != p_pred
    top2 = np.sort(t_scores, axis=1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0])[differ]
    share = float(differ.mean())
    widest = float(margins.max()) if margins.size else 0.0
    passed = share <= 1 - MIN_AGREEMENT and widest < near_tie
    problem = None if passed else f"{int(differ.sum())} pixels differ, widest top-2 margin {widest:.2e}"
    return Diff("argmax_disagreement", passed, share, widest, share, 1 - MIN_AGREEMENT, problem)


def run(ctx) -> StepResult:
    found = eval_pass(ctx)
    key = ctx.spec.eval_outputs[0]
    _, label = ctx.batch(0)
    pred = found["torch"][key].argmax(axis=1)
    args = (pred, label, ctx.spec.num_classes, ctx.spec.ignore_index)
    t_metrics, p_metrics = ctx.tb.metrics(*args), ctx.pb.metrics(*args)
    ctx.save_results(STEP, t_metrics, p_metrics)
    rows = compare_all(p_metrics, t_metrics, lambda key: ctx.profile("exact" if key == "confusion" else "metric"),
                       matching_nan_ok=True)
    rows.append(argmax_agreement(found["torch"][key], found["paddle"][key], NEAR_TIE[ctx.dtype]))
    return StepResult.from_rows(STEP, rows, note=f"mIoU {float(t_metrics['miou']):.4f} on the fixture")


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
