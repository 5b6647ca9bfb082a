"""Step `forward`: eval mode, batch >= 2, every named output and every tap.

On failure the first diverging module is named: the first failing tap (in the order modules
are called), then, inside it, the first failing submodule.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, not align/, goes on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])


from align.harness import StepResult, compare_all

STEP = "forward"


def eval_pass(ctx):
    """Both twins' eval forward on batch 0 with the spec's taps (cached in the context)."""
    if "eval" not in ctx.cache:
        tmodel, pmodel = ctx.models()
        x, _ = ctx.batch(0)
        t_out, t_taps = ctx.tb.capture(tmodel, ctx.spec, x, ctx.spec.taps)
        p_out, p_taps = ctx.pb.capture(pmodel, ctx.spec, x, ctx.spec.taps)
        ctx.cache["eval"] = dict(torch=t_out, paddle=p_out, torch_taps=t_taps, paddle_taps=p_taps,
                                 models=(tmodel, pmodel), x=x)
    return ctx.cache["eval"]


def localize(ctx, tap: str) -> str:
    """The first failing submodule of ``tap`` (itself if none of its children fails)."""
    found = ctx.cache["eval"]
    tmodel, pmodel = found["models"]
    module = tap.partition("[")[0]
    names = [n for n in ctx.call_order() if n == module or n.startswith(module + ".")]
    _, t_taps = ctx.tb.capture(tmodel, ctx.spec, found["x"], names)
    _, p_taps = ctx.pb.capture(pmodel, ctx.spec, found["x"], names)
    rows = compare_all(p_taps, t_taps, ctx.profile("tap"))
    return next((r.name for r in rows if not r.passed), tap)


def run(ctx) -> StepResult:
    found = eval_pass(ctx)
    ctx.save_results(STEP, found["torch"], found["paddle"])
    tap_rows = compare_all(found["paddle_taps"], found["torch_taps"], ctx.profile("tap"))
    out_rows = compare_all(found["paddle"], found["torch"], ctx.profile("output"))
    ctx.cache["tap_rows"] = tap_rows
    first = next((r.name for r in tap_rows if not r.passed), None)
    if first is not None:
        first = localize(ctx, first)
    elif any(not r.passed for r in out_rows):
        first = f"output:{next(r.name for r in out_rows if not r.passed)} (after the last tap)"
    return StepResult.from_rows(STEP, tap_rows + out_rows, first_divergence=first)


if __name__ == "__main__":
    from align.run_all import main

    sys.exit(main(default_steps=(STEP,)))
