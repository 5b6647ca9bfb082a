"""Step `train`: K iterations of the real training loop (train mode, loss, clip, optimizer,
schedule) on fixed, distinct batches: loss_i and lr_i curves, then the whole state after K
steps (parameters AND BatchNorm running statistics, which only training moves)."""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])


from align.harness import TRAIN_ITERS, StepResult, compare_all, first_in_order
from rsport.compare import compare

STEP = "train"


def run(ctx) -> StepResult:
    tmodel, pmodel = ctx.models()
    t_loss_fn, p_loss_fn = ctx.loss_fns()
    batches = [ctx.batch(i) for i in range(TRAIN_ITERS)]
    order = ctx.call_order()
    t_loss, t_lr, t_state = ctx.tb.train_iterations(tmodel, ctx.spec, t_loss_fn, batches, ctx.spec.recipe)
    p_loss, p_lr, p_state = ctx.pb.train_iterations(pmodel, ctx.spec, p_loss_fn, batches, ctx.spec.recipe)
    ctx.save_results(STEP, {"loss_i": t_loss, "lr_i": t_lr}, {"loss_i": p_loss, "lr_i": p_lr})
    rows = [compare("loss_i", p_loss, t_loss, ctx.profile("curve")), compare("lr_i", p_lr, t_lr, ctx.profile("exact"))]
    curve = f"loss_i diff {rows[0].max_abs:.1e}"
    if ctx.profile("state") is not None:  # float64 only: see harness.KIND_PROFILES
        rows += compare_all(p_state, ctx.to_paddle_names(t_state), ctx.profile("state"))
    return StepResult.from_rows(STEP, rows, first_divergence=first_in_order(rows, ["loss_i", "lr_i", *order]),
                                note=f"{curve}; loss " + " ".join(f"{v:.5f}" for v in t_loss))


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
