"""Step `backward`: the gradient of EVERY trainable parameter after the train-mode loss, mapped
through the conversion table (names and layouts); the first failing parameter in call order is
named."""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])


from align.harness import StepResult, compare_all, first_in_order
from align.loss import train_pass

STEP = "backward"


def run(ctx) -> StepResult:
    found = train_pass(ctx)
    t_grads, p_grads = found["torch"][2], found["paddle"][2]
    mapped = ctx.to_paddle_names(t_grads)
    ctx.save_results(STEP, t_grads, p_grads)
    rows = compare_all(p_grads, mapped, ctx.profile("grad"))
    return StepResult.from_rows(STEP, rows, first_divergence=first_in_order(rows, found["order"]),
                                note=f"{len(rows)} gradients")


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
