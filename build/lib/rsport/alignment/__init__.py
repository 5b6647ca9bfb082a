"""Step-by-step alignment of a torch model and its paddle port (the public API).

``align_pair`` aligns any pair a user holds in memory; ``align/run_all.py`` is the same engine
applied to the registered specs (``run_specs``). Both return an AlignReport and write
``report.json``, ``report.md`` (with the per-tap plot), each side's results in reprod_log format
and ``<step>_diff.log`` files; a failed comparison never raises: the report says FAILED.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rsport.alignment.context import DTYPES, STEPS, Context, StepResult
from rsport.alignment.pair import Pair, PairError, from_models, from_spec
from rsport.alignment.report import AlignReport
from rsport.alignment.steps import crash_site, run_step

__all__ = ["AlignReport", "DTYPES", "Pair", "PairError", "STEPS", "align_pair", "run_pairs", "run_specs"]


def _check(values, known, what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise PairError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(known)}")
    return values


def run_pairs(make_pair: Callable[[str], Pair], names, steps=STEPS, dtypes=DTYPES, out="output/align",
              variant: str = "default", progress=None, command: str = "rsport.align_pair") -> AlignReport:
    """Run ``steps`` in ``dtypes`` for each name's pair (built by ``make_pair(name)``, one at a time)."""
    steps, dtypes = _check(steps, STEPS, "step"), _check(dtypes, DTYPES, "dtype")
    report = AlignReport(command=command)
    start = time.perf_counter()
    total, done = len(names) * len(steps) * len(dtypes), 0
    for name in names:
        try:
            pair = make_pair(name)
        except PairError:
            raise
        except Exception as err:  # noqa: BLE001 - a model that cannot be built fails every step, reported
            message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            site, location = crash_site(err)
            for dtype in dtypes:
                for step in steps:
                    report.add(name, dtype, variant, StepResult(step, False, first_divergence=site, details={
                        "location": location}, error=f"building the pair failed: {message}"))
            done += len(steps) * len(dtypes)
            continue
        for dtype in dtypes:
            ctx = Context(pair, dtype, out)
            for step in steps:
                done += 1
                if progress:
                    progress(f"[{done}/{total}] {name} {dtype} {step} ...")
                report.add(name, dtype, variant, run_step(ctx, step), pair.notes)
            report.taps[(name, dtype)] = ctx.cache.get("tap_rows", [])
        del pair
    report.seconds = time.perf_counter() - start
    return report


def run_specs(names, steps=STEPS, dtypes=DTYPES, out="output/align", variant: str = "default", torch_ckpt=None,
              mutate_paddle=None, progress=None, command: str = "python align/run_all.py") -> AlignReport:
    """``run_pairs`` over registered models (their twins, the embedded reference or ``torch_ckpt``)."""
    from rsport.registry import get as get_spec

    return run_pairs(lambda name: from_spec(get_spec(name), variant, torch_ckpt, mutate_paddle), list(names),
                     steps, dtypes, out, variant, progress, command)


def align_pair(torch_model, paddle_model, inputs, *, labels=None, loss_fns=None, steps=STEPS, dtypes=DTYPES,
               weights: str = "torch", rules=None, ignore=(), recipe=None, num_classes=None, ignore_index=255,
               output_names=None, taps=(), name: str = "pair", out: str | Path = "output/align_pair",
               output_profile: str = "fp32_prob", profile_overrides=None, sizes=None, randomize_bn: bool = True,
               mutate_paddle=None, progress=None) -> AlignReport:
    """Align a torch model and its paddle port, step by step, in float32 and float64.

    Args:
        torch_model / paddle_model: the two models (torch ``nn.Module``, paddle ``nn.Layer``); they
            are cast and reloaded during the run and restored to their dtype and state afterwards.
        inputs: a numpy batch ``[N, C, H, W]`` (N >= 2 recommended: BatchNorm) or a list of batches
            (the train step uses two; one batch is reused). Saved as ``.npy`` fixtures under ``out``.
        labels: label batches for ``loss_fns`` (default: seeded class ids from ``num_classes``).
        loss_fns: ``(torch_fn, paddle_fn)``, each ``fn(output, label) -> scalar`` where ``output`` is
            what the model's forward returned. None: a seeded probe loss (sum of mean(output * w)).
        steps / dtypes: which of data, forward, metric, loss, backward, optimizer, train; float32,
            float64.
        weights: "torch" (both start from the torch model's weights, mapped onto paddle), "paddle"
            (the reverse) or "as_is" (each keeps its own).
        rules: rename rules (rsport.rules.Rule) tried before the common BatchNorm rules; None with
            names that do not match: the tensors are mapped by structure (rsport.automap).
        ignore: anchored regexes of torch tensors without a paddle counterpart.
        recipe: optimizer recipe overrides (rsport.registry.DEFAULT_RECIPE keys).
        num_classes / ignore_index: the label contract (metric step, seeded labels).
        output_names: names of the flattened outputs, one tuple or {"eval": ..., "train": ...}.
        taps: submodule names compared as a summary (a name that never fires is an error).
        name: the pair's label in reports; out: the output folder.
        output_profile / profile_overrides: float32 profile of the eval outputs; per (dtype, kind).
        sizes: other (H, W) sizes at which forward, loss and backward run again (default: the
            input turned on its side, W x H, when H != W: a height/width mix-up or a fixed-size
            pooling that agrees at one size fails at the other).
        randomize_bn: when every BatchNorm layer holds the default statistics (untrained weights),
            start both models from seeded non-default ones instead (a forgotten BN buffer then
            fails); the report's notes say so.
        mutate_paddle: called on the freshly loaded paddle model each time (bug injection).
        progress: called with a status line before each step.

    Returns:
        AlignReport (``passed``, ``table()``, ``step(name, dtype, step)``), already written to ``out``.

    Raises:
        PairError: the arguments cannot be aligned as given (bad argument, weights that do not map).
    """
    from rsport.frameworks import adapter
    from rsport.rules import PADDLE, TORCH

    tb, pb = adapter(TORCH), adapter(PADDLE)
    saved = tb.state_arrays(torch_model), pb.state_arrays(paddle_model)
    pair = from_models(torch_model, paddle_model, inputs, labels=labels, loss_fns=loss_fns, weights=weights,
                       rules=rules, ignore=ignore, recipe=recipe, num_classes=num_classes,
                       ignore_index=ignore_index, output_names=output_names, taps=taps, name=name,
                       output_profile=output_profile, profile_overrides=profile_overrides, sizes=sizes,
                       randomize_bn=randomize_bn)
    pair.mutate_paddle = mutate_paddle
    try:
        report = run_pairs(lambda _: pair, [name], steps, dtypes, out, "user", progress)
    finally:
        for fw, model, state in ((tb, torch_model, saved[0]), (pb, paddle_model, saved[1])):
            dtype = next((str(v.dtype) for v in state.values() if v.dtype.kind == "f"), "float32")
            fw.load_state(fw.cast(model, dtype), state)
            model.eval()
    report.write(out)
    return report
