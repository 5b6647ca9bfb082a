"""Step `loss`: train-mode forward (batch statistics) and the model's real training loss, on
labels with ignore pixels."""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from align.harness import StepResult, compare_all
from rsport.compare import compare

STEP = "loss"


def train_pass(ctx):
    """One train-mode forward + loss + backward per twin on batch 0 (cached in the context)."""
    if "train" not in ctx.cache:
        tmodel, pmodel = ctx.models()
        t_loss_fn, p_loss_fn = ctx.loss_fns()
        x, label = ctx.batch(0)
        ctx.cache["train"] = dict(torch=ctx.tb.train_pass(tmodel, ctx.spec, t_loss_fn, x, label),
                                  paddle=ctx.pb.train_pass(pmodel, ctx.spec, p_loss_fn, x, label),
                                  order=ctx.call_order())
    return ctx.cache["train"]


def run(ctx) -> StepResult:
    found = train_pass(ctx)
    (t_out, t_loss, _), (p_out, p_loss, _) = found["torch"], found["paddle"]
    ctx.save_results(STEP, {**t_out, "loss": t_loss}, {**p_out, "loss": p_loss})
    rows = compare_all(p_out, t_out, ctx.profile("train_output"))
    rows.append(compare("loss", np.asarray(p_loss), np.asarray(t_loss), ctx.profile("loss")))
    return StepResult.from_rows(STEP, rows, note=f"loss {float(t_loss):.6f}")


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
