"""Step `data`: both twins are fed exactly the same batches.

The input pipeline is framework-neutral (numpy, rsport.fixtures); this step checks that what
each side actually feeds its model (after its own tensor conversion) equals the saved .npy
fixture bit for bit, with the same shapes and dtypes.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])


from align.harness import TRAIN_ITERS, StepResult, compare_all

STEP = "data"


def run(ctx) -> StepResult:
    batches = {f"{kind}{i}": value for i in range(TRAIN_ITERS)
               for kind, value in zip(("image", "label"), ctx.batch(i))}
    torch_side = ctx.tb.to_numpy({k: ctx.tb.as_tensor(v) for k, v in batches.items()})
    paddle_side = ctx.pb.to_numpy({k: ctx.pb.as_tensor(v) for k, v in batches.items()})
    ctx.save_results(STEP, torch_side, paddle_side)
    rows = compare_all(torch_side, batches, ctx.profile("exact")) + compare_all(paddle_side, batches, ctx.profile("exact"))
    for row, side in zip(rows, ["torch"] * len(batches) + ["paddle"] * len(batches)):
        row.name = f"{side}:{row.name}"
    return StepResult.from_rows(STEP, rows)


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
