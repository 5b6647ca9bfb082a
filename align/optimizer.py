"""Step `optimizer`: the training recipe alone (SGD momentum, weight decay, global-norm clip,
poly LR). Both twins receive the same seeded gradients for k steps, whose global norm is above
the clip norm at some steps and below it at others; LR values and the parameters after k steps
are compared."""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from align.harness import FIXTURE_SEED, OPTIMIZER_NORMS, OPTIMIZER_STEPS, StepResult, compare_all, first_in_order
from rsport.compare import compare

STEP = "optimizer"
POOL = 1 << 20  # seeded normals per step, tiled over the parameters (drawing 66M would take seconds)


def seeded_gradients(ctx, shapes: dict) -> list[dict]:
    """Per step, name -> gradient with global L2 norm OPTIMIZER_NORMS[i] x clip norm. Only the
    seeds and norms are saved as a fixture: the arrays are the model's size."""
    plan = ctx.fixture("optimizer_plan", lambda: np.array(
        [[FIXTURE_SEED + 7 + i, OPTIMIZER_NORMS[i] * (ctx.spec.recipe.get("clip_norm") or 1.0)]  # 1: no clipping
         for i in range(OPTIMIZER_STEPS)]))
    steps = []
    for seed, norm in plan:
        pool = np.random.default_rng(int(seed)).standard_normal(POOL, dtype=np.float32)
        grads, offset = {}, 0
        for name, shape in shapes.items():  # each tensor a different window of the seeded pool
            size = int(np.prod(shape))
            grads[name] = np.roll(np.resize(pool, size), -offset).reshape(shape)
            offset = (offset + 7919) % POOL
        total = np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))  # scale only
        steps.append({name: (g * np.float32(norm / total)).astype(ctx.dtype) for name, g in grads.items()})
    return steps


def run(ctx) -> StepResult:
    tmodel, pmodel = ctx.models()
    t_state = ctx.tb.state_arrays(tmodel)
    t_grads = seeded_gradients(ctx, {name: t_state[name].shape for name in ctx.tb.trainable_names(tmodel)})
    p_grads = [ctx.to_paddle_names(g) for g in t_grads]
    t_lr, t_params = ctx.tb.optimizer_steps(tmodel, t_grads, ctx.spec.recipe)
    p_lr, p_params = ctx.pb.optimizer_steps(pmodel, p_grads, ctx.spec.recipe)
    ctx.save_results(STEP, {"lr": t_lr, **t_params}, {"lr": p_lr, **p_params})
    rows = [compare("lr", p_lr, t_lr, ctx.profile("exact"))]
    rows += compare_all(p_params, ctx.to_paddle_names(t_params), ctx.profile("param"))
    order = ctx.call_order()
    return StepResult.from_rows(STEP, rows, first_divergence=first_in_order(rows, ["lr", *order]),
                                note=f"{OPTIMIZER_STEPS} steps, gradient norms {OPTIMIZER_NORMS} x clip")


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
