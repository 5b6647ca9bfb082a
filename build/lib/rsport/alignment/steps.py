"""The seven alignment steps, each ``step(ctx) -> StepResult``, in the reproduction guide's order.

data      what each side feeds its model equals the saved .npy fixtures, bit for bit
forward   eval mode: every named output and the declared taps; the first divergence named
metric    both sides' metric code on the same predictions and labels; argmax agreement
loss      train-mode outputs and the pair's loss, on labels with ignore pixels
backward  the gradient of every trainable parameter, mapped through the weight mapping
optimizer the recipe alone on seeded gradients (LR values and parameters after k steps)
train     K real iterations: loss_i, lr_i, and in float64 the whole state afterwards
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from rsport.alignment.context import (FIXTURE_SEED, OPTIMIZER_NORMS, OPTIMIZER_STEPS, STEPS, TRAIN_ITERS,
                                     StepResult, compare_all, first_in_order)
from rsport.alignment import causes, localize
from rsport.compare import Diff, compare

POOL = 1 << 20  # seeded normals per optimizer step, tiled over the parameters (drawing 66M would take seconds)
MIN_AGREEMENT = 0.9999
NEAR_TIE = {"float32": 1e-4, "float64": 1e-9}  # top-2 margin under which a flip is a tie


# --- data ---------------------------------------------------------------------------------------
def data(ctx) -> StepResult:
    """Both twins are fed exactly the same batches: what each side actually feeds its model (after
    its own tensor conversion) equals the saved .npy fixture bit for bit, shapes and dtypes too."""
    batches = {f"{kind}{i}": value for i in range(TRAIN_ITERS)
               for kind, value in zip(("image", "label"), ctx.batch(i))}
    torch_side = ctx.tb.to_numpy({k: ctx.tb.as_tensor(v) for k, v in batches.items()})
    paddle_side = ctx.pb.to_numpy({k: ctx.pb.as_tensor(v) for k, v in batches.items()})
    ctx.save_results("data", torch_side, paddle_side)
    rows = compare_all(torch_side, batches, ctx.profile("exact")) + compare_all(paddle_side, batches, ctx.profile("exact"))
    for row, side in zip(rows, ["torch"] * len(batches) + ["paddle"] * len(batches)):
        row.name = f"{side}:{row.name}"
    return StepResult.from_rows("data", rows)


# --- forward ------------------------------------------------------------------------------------
def eval_pass(ctx):
    """Both twins' eval forward on batch 0, every submodule's output recorded (cached)."""
    if "eval" not in ctx.cache:
        tmodel, pmodel = ctx.models()
        x, _ = ctx.batch(0)
        t_out, t_taps, _, t_order = ctx.tb.capture(tmodel, x)
        p_out, p_taps, _, p_order = ctx.pb.capture(pmodel, x)
        pairs = localize.module_pairs(t_order, p_order, ctx.tb.module_classes(tmodel), ctx.pb.module_classes(pmodel),
                                      ctx.pair.plan)
        ctx.cache["order"] = t_order
        ctx.cache["eval"] = dict(torch=ctx.name_outputs(t_out, False), paddle=ctx.name_outputs(p_out, False),
                                 torch_taps=t_taps, paddle_taps=p_taps, torch_order=t_order, paddle_order=p_order,
                                 pairs=pairs, models=(tmodel, pmodel), x=x)
    return ctx.cache["eval"]


def declared_taps(ctx, rows: list[Diff], fired: list[str]) -> list[Diff]:
    """The declared taps' rows (the summary and the plot); a declared tap that never fired is a
    failed row: it names a module the forward does not call (a LayerList, a typo)."""
    by_module = {}
    for row in rows:
        by_module.setdefault(row.name.partition("[")[0], []).append(row)
    out = []
    for tap in ctx.pair.taps:
        if tap in fired:
            out += by_module.get(tap, [])
        else:
            out.append(Diff(f"tap:{tap}", False, float("nan"), float("nan"), float("nan"), float("nan"),
                            "declared tap never fired: the forward never calls this submodule (declare the modules "
                            "it calls)"))
    return out


def forward(ctx) -> StepResult:
    """Eval mode, batch >= 2: every named output, every submodule's output (automatic taps) and the
    declared taps; at a second, differently shaped input the outputs again. On failure the first
    divergence is named where it starts (rsport.alignment.localize)."""
    found = eval_pass(ctx)
    ctx.save_results("forward", found["torch"], found["paddle"])
    tol = ctx.profile("tap")
    module_rows = localize.compare_modules(found["torch_taps"], found["paddle_taps"], found["torch_order"],
                                           found["pairs"], tol)
    tap_rows = declared_taps(ctx, module_rows, found["torch_order"])
    ctx.cache["tap_rows"] = [r for r in tap_rows if r.problem is None] or module_rows
    out_rows = compare_all(found["paddle"], found["torch"], ctx.profile("output"))
    size_rows = other_sizes(ctx)
    details = {"modules_compared": len(module_rows)}
    judged = module_rows
    if ctx.dtype == "float32":
        # Inner layers carry float32 noise up to ~1e-3 of their scale between two correct ports (a
        # sigmoid of 256-channel dot products in FarSeg's scene relation, ...): in float32 every
        # submodule is compared and used to localize, but only the outputs and the declared taps
        # decide the verdict. float64 judges every submodule (noise ~1e-13).
        noisy = [r.name for r in module_rows if not r.passed]
        details["modules_above_fp32_tap_profile"] = len(noisy)
        failing = any(not r.passed for r in tap_rows + out_rows + size_rows)
        judged = module_rows if failing else [r for r in module_rows if r.passed]
    first = next((r.name.partition("[")[0] for r in judged if not r.passed), None)
    never = [r.name for r in tap_rows if r.problem and r.problem.startswith("declared tap never fired")]
    if first is not None:
        tmodel, pmodel = found["models"]
        where = localize.locate(ctx, tmodel, pmodel, found["x"], first, found["pairs"], found["torch_order"],
                                found["paddle_order"], tol)
        details.update(location_kind=where.kind, location_detail=where.detail or None)
        details.update(_cause(causes.module_cause(ctx, tmodel, pmodel, where, tol)))
        first = where.module
    elif any(not r.passed for r in out_rows):
        first = f"output:{next(r.name for r in out_rows if not r.passed)} ({localize.ROOT} forward, after every submodule)"
        tmodel, pmodel = found["models"]
        root = localize.Location(localize.ROOT, "wiring", "after every submodule")
        details.update(_cause(causes.module_cause(ctx, tmodel, pmodel, root, ctx.profile("output"))))
    elif any(not r.passed for r in size_rows):
        first = next(r.name for r in size_rows if not r.passed)
    elif never:
        first = never[0]
    return StepResult.from_rows("forward", judged + tap_rows + out_rows + size_rows, first_divergence=first,
                                **details)


def _cause(found: dict) -> dict:
    """The report entries of a likely-cause search."""
    return {"cause": found["cause"] or causes.describe_none(found)}


def other_sizes(ctx) -> list[Diff]:
    """The eval outputs at the pair's other alignment sizes (H != W, another aspect ratio): a
    fixed-size pooling or a height/width swap that happens to agree at one size fails at another."""
    rows = []
    for size in range(1, len(ctx.pair.image_shapes)):
        tmodel, pmodel = ctx.models()
        x, _ = ctx.batch(0, size)
        tag = "x".join(map(str, x.shape[2:]))
        t_out, p_out = ctx.name_outputs(ctx.tb.run(tmodel, x), False), ctx.name_outputs(ctx.pb.run(pmodel, x), False)
        for row in compare_all(p_out, t_out, ctx.profile("output")):
            row.name = f"{row.name}@{tag}"
            rows.append(row)
    return rows


# --- metric -------------------------------------------------------------------------------------
def argmax_agreement(t_scores: np.ndarray, p_scores: np.ndarray, near_tie: float) -> Diff:
    t_pred, p_pred = t_scores.argmax(axis=1), p_scores.argmax(axis=1)
    differ = t_pred != p_pred
    top2 = np.sort(t_scores, axis=1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0])[differ]
    share = float(differ.mean())
    widest = float(margins.max()) if margins.size else 0.0
    # 99.99% of the pixels, but never fewer than 2 pixels: a 2 x 64 x 96 fixture (12,288 pixels) would
    # otherwise allow a single near-tie flip; every flip must be a near-tie in any case.
    allowed = max(1 - MIN_AGREEMENT, 2 / differ.size)
    passed = share <= allowed and widest < near_tie
    problem = None if passed else f"{int(differ.sum())} pixels differ, widest top-2 margin {widest:.2e}"
    return Diff("argmax_disagreement", passed, share, widest, share, allowed, problem)


def metric(ctx) -> StepResult:
    """Both sides' metric code on the same predictions and labels: the confusion matrix exactly
    equal, per-class IoU, mIoU, mIoU-fg, OA and kappa equal to a few ulps (profile ``metric``:
    paddle's float64 division is not correctly rounded); and each side's own argmax predictions
    agree on >= 99.99% of pixels with every disagreement at a near-tie of the top two scores."""
    pair = ctx.pair
    found = eval_pass(ctx)
    key = next(iter(found["torch"]))
    scores = found["torch"][key]
    _, label = ctx.batch(0)
    if pair.num_classes is None or scores.ndim != 4 or scores.shape[1] != pair.num_classes:
        return StepResult.skip("metric", f"needs class scores [N, num_classes, H, W] as the first output and "
                                         f"num_classes (got {key} {list(scores.shape)}, num_classes "
                                         f"{pair.num_classes})")
    args = (scores.argmax(axis=1), label, pair.num_classes, pair.ignore_index)
    t_metrics, p_metrics = ctx.tb.metrics(*args), ctx.pb.metrics(*args)
    ctx.save_results("metric", t_metrics, p_metrics)
    rows = compare_all(p_metrics, t_metrics, lambda k: ctx.profile("exact" if k == "confusion" else "metric"),
                       matching_nan_ok=True)
    rows.append(argmax_agreement(scores, found["paddle"][key], NEAR_TIE[ctx.dtype]))
    return StepResult.from_rows("metric", rows, note=f"mIoU {float(t_metrics['miou']):.4f} on the fixture")


# --- loss and backward --------------------------------------------------------------------------
def train_pass(ctx, size: int = 0):
    """One train-mode forward + loss + backward per twin on batch 0 at alignment size ``size``
    (cached in the context)."""
    key = "train" if size == 0 else f"train@{size}"
    if key not in ctx.cache:
        tmodel, pmodel = ctx.models()
        x, label = ctx.batch(0, size)
        t_out, t_loss, t_grads, t_dout = ctx.tb.train_pass(tmodel, ctx.pair.loss_for("torch"), x, label)
        p_out, p_loss, p_grads, p_dout = ctx.pb.train_pass(pmodel, ctx.pair.loss_for("paddle"), x, label)
        names = ctx.name_outputs(t_out, True)
        grad_names = dict(zip([k for k, _ in t_out], names))
        ctx.cache[key] = dict(torch=(names, t_loss, t_grads, {grad_names[k]: v for k, v in t_dout.items()}),
                              paddle=(ctx.name_outputs(p_out, True), p_loss, p_grads,
                                      {grad_names.get(k, k): v for k, v in p_dout.items()}),
                              order=ctx.call_order(), label=label, x=x)
    return ctx.cache[key]


def loss(ctx) -> StepResult:
    """Train-mode forward (batch statistics) and the pair's training loss, on labels with ignore
    pixels, plus the gradient of the loss with respect to each output (d loss / d output), so a
    mistake in the loss alone fails here and is named at the loss; at every alignment size."""
    rows, first, details = [], None, {}
    for size in range(len(ctx.pair.image_shapes)):
        found = train_pass(ctx, size)
        (t_out, t_loss, _, t_dout), (p_out, p_loss, _, p_dout) = found["torch"], found["paddle"]
        tag = "" if size == 0 else "@" + "x".join(map(str, found["x"].shape[2:]))
        if size == 0:
            ctx.save_results("loss", {**t_out, "loss": t_loss}, {**p_out, "loss": p_loss})
        out_rows = compare_all(p_out, t_out, ctx.profile("train_output"))
        loss_rows = [compare("loss", np.asarray(p_loss), np.asarray(t_loss), ctx.profile("loss"))]
        loss_rows += compare_all({f"d loss/d {k}": v for k, v in p_dout.items()},
                                 {f"d loss/d {k}": v for k, v in t_dout.items()}, ctx.profile("loss_grad"))
        for row in out_rows + loss_rows:
            row.name += tag
        rows += out_rows + loss_rows
        if first is None and any(not r.passed for r in out_rows):
            first = next(r.name for r in out_rows if not r.passed) + " (train-mode forward)"
        elif first is None and any(not r.passed for r in loss_rows):
            first = "loss"
            details.update(_loss_cause(ctx, found))
    note = f"loss {float(ctx.cache['train']['torch'][1]):.6f}" + ("" if ctx.pair.has_loss() else
                                                                 " (probe loss: no loss given)")
    return StepResult.from_rows("loss", rows, first_divergence=first, note=note, **details)


def _loss_cause(ctx, found) -> dict:
    """Likely cause of a loss-only divergence: attributes of the two loss objects (a registered
    model's built by the adapters, a user's ``loss_fns`` as given), each tested on torch's train
    outputs."""
    pair = ctx.pair
    outputs = list(found["torch"][0].values())
    if pair.loss_fns is not None:
        t_loss, p_loss = pair.loss_fns

        def invoke(fw, loss, tensors):  # fn(output, label): the output as the model returned it
            return loss(tensors[0] if len(tensors) == 1 else tuple(tensors), fw.as_tensor(found["label"]))
    elif pair.spec is not None and pair.spec.has_loss():
        t_loss, p_loss = ctx.tb.build_loss(pair.spec), ctx.pb.build_loss(pair.spec)

        def invoke(fw, loss, tensors):  # a registered loss: loss(*outputs, label)
            return loss(*tensors, fw.as_tensor(found["label"]))
    else:
        return {"cause": "the probe loss differs although the outputs agree: check the outputs' layout"}
    return _cause(causes.loss_cause(ctx, t_loss, p_loss, invoke, outputs, ctx.profile("loss_grad")))


def backward(ctx) -> StepResult:
    """The gradient of EVERY trainable parameter after the train-mode loss, mapped through the
    weight mapping (names and layouts), at every alignment size; the first failing parameter in
    call order is named."""
    rows, first = [], None
    for size in range(len(ctx.pair.image_shapes)):
        found = train_pass(ctx, size)
        t_grads, p_grads = found["torch"][2], found["paddle"][2]
        if size == 0:
            ctx.save_results("backward", t_grads, p_grads)
        size_rows = compare_all(p_grads, ctx.to_paddle_names(t_grads), ctx.profile("grad"))
        failing = first_in_order(size_rows, found["order"])
        if size:
            tag = "@" + "x".join(map(str, found["x"].shape[2:]))
            for row in size_rows:
                row.name += tag
            failing = failing and failing + tag
        first = first or failing
        rows += size_rows
    return StepResult.from_rows("backward", rows, first_divergence=first,
                                note=f"{len(rows) // len(ctx.pair.image_shapes)} gradients at "
                                     f"{len(ctx.pair.image_shapes)} sizes")


# --- optimizer and train ------------------------------------------------------------------------
def seeded_gradients(ctx, shapes: dict) -> list[dict]:
    """Per step, name -> gradient with global L2 norm OPTIMIZER_NORMS[i] x clip norm. Only the
    seeds and norms are saved as a fixture: the arrays are the model's size."""
    clip = ctx.pair.recipe.get("clip_norm") or 1.0
    plan = ctx.fixture("optimizer_plan", lambda: np.array(
        [[FIXTURE_SEED + 7 + i, OPTIMIZER_NORMS[i] * clip] for i in range(OPTIMIZER_STEPS)]))
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


def optimizer(ctx) -> StepResult:
    """The training recipe alone (SGD momentum, weight decay, global-norm clip, poly LR). Both
    twins receive the same seeded gradients for k steps, whose global norm is above the clip norm
    at some steps and below it at others; LR values and the parameters after k steps are compared."""
    tmodel, pmodel = ctx.models()
    t_state = ctx.tb.state_arrays(tmodel)
    t_grads = seeded_gradients(ctx, {name: t_state[name].shape for name in ctx.tb.trainable_names(tmodel)})
    p_grads = [ctx.to_paddle_names(g) for g in t_grads]
    t_lr, t_params = ctx.tb.optimizer_steps(tmodel, t_grads, ctx.pair.recipe)
    p_lr, p_params = ctx.pb.optimizer_steps(pmodel, p_grads, ctx.pair.recipe)
    ctx.save_results("optimizer", {"lr": t_lr, **t_params}, {"lr": p_lr, **p_params})
    rows = [compare("lr", p_lr, t_lr, ctx.profile("exact"))]
    rows += compare_all(p_params, ctx.to_paddle_names(t_params), ctx.profile("param"))
    return StepResult.from_rows("optimizer", rows, first_divergence=first_in_order(rows, ["lr", *ctx.call_order()]),
                                note=f"{OPTIMIZER_STEPS} steps, gradient norms {OPTIMIZER_NORMS} x clip")


def train(ctx) -> StepResult:
    """K iterations of the real training loop (train mode, loss, clip, optimizer, schedule) on
    fixed, distinct batches: loss_i and lr_i curves, then the whole state after K steps
    (parameters AND BatchNorm running statistics, which only training moves)."""
    tmodel, pmodel = ctx.models()
    batches = [ctx.batch(i) for i in range(TRAIN_ITERS)]
    order = ctx.call_order()
    recipe = ctx.pair.recipe
    t_loss, t_lr, t_state = ctx.tb.train_iterations(tmodel, ctx.pair.loss_for("torch"), batches, recipe)
    p_loss, p_lr, p_state = ctx.pb.train_iterations(pmodel, ctx.pair.loss_for("paddle"), batches, recipe)
    ctx.save_results("train", {"loss_i": t_loss, "lr_i": t_lr}, {"loss_i": p_loss, "lr_i": p_lr})
    rows = [compare("loss_i", p_loss, t_loss, ctx.profile("curve")), compare("lr_i", p_lr, t_lr, ctx.profile("exact"))]
    curve = f"loss_i diff {rows[0].max_abs:.1e}"
    if ctx.profile("state") is not None:  # float64 only: see context.KIND_PROFILES
        rows += compare_all(p_state, ctx.to_paddle_names(t_state), ctx.profile("state"))
    first = first_in_order(rows, ["loss_i", "lr_i", *order])
    details = {}
    if first is not None and first not in ("loss_i", "lr_i"):
        tmodel, pmodel = ctx.models()
        details = _cause(causes.state_cause(ctx, tmodel, pmodel, first, ctx.profile("state")))
    return StepResult.from_rows("train", rows, first_divergence=first,
                                note=f"{curve}; loss " + " ".join(f"{v:.5f}" for v in t_loss), **details)


RUNNERS = {"data": data, "forward": forward, "metric": metric, "loss": loss, "backward": backward,
           "optimizer": optimizer, "train": train}
assert tuple(RUNNERS) == STEPS


def run_step(ctx, step: str) -> StepResult:
    """Run one step; a crashing twin is a failed step (reported with where it crashed, and a
    likely cause when the error shows one), never an exception. Writes the step's diff log."""
    start = time.perf_counter()
    try:
        result = RUNNERS[step](ctx)
    except Exception as err:  # noqa: BLE001 - a crashing twin is a failed step, reported, not a crash
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        site, location = crash_site(err, model_files(ctx.pair))
        details = {"location": location}
        cause = causes.crash_cause(str(err))
        if cause:
            details["cause"] = cause
        result = StepResult(step, False, first_divergence=site, error=message, details=details)
    result.seconds = time.perf_counter() - start
    ctx.write_diff_log(result)
    return result


CORE = Path(__file__).resolve().parents[1]  # rsport/: frames inside it are the harness, not the model


def model_files(pair) -> set[Path]:
    """The files that define the pair's two model classes."""
    import inspect

    files = set()
    for model in pair.models():
        try:
            files.add(Path(inspect.getsourcefile(type(model))).resolve())
        except (TypeError, OSError):
            continue
    return files


def crash_site(err: Exception, files=()) -> tuple[str, str]:
    """(where, traceback path): the innermost frame in a model's own file (``files``) when the
    crash happened in code it called (a shared helper: the call site is named, the helper's frame
    follows), else the innermost frame outside the harness and the installed packages."""
    frames = traceback.extract_tb(err.__traceback__)
    outside = [f for f in frames if not Path(f.filename).resolve().is_relative_to(CORE)
               and "site-packages" not in f.filename and "dist-packages" not in f.filename]
    innermost = (outside or frames)[-1]
    own = [f for f in outside if Path(f.filename).resolve() in files]
    site = own[-1] if own else innermost
    where = f"{_short(site.filename)}:{site.lineno} ({site.name})"
    path = where if site is innermost else f"{where} -> {_short(innermost.filename)}:{innermost.lineno} ({innermost.name})"
    return where, path


def _short(filename: str) -> str:
    path = Path(filename).resolve()
    cwd = Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
