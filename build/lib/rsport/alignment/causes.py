"""Likely cause: the usual porting mistakes, tested as hypotheses on the first divergent module.

The module that the localization names (rsport.alignment.localize) is called again, alone, on
the torch twin's recorded inputs: torch's module gives the expected output, the paddle module is
changed one hypothesis at a time (and restored), and a hypothesis that makes it agree is the
likely cause, reported with the error before and after ("epsilon 0.001 on the paddle side,
1e-05 in torch: max_abs 3.1e-02 -> 4.0e-13"). When none explains it, the report says so and lists
what was tested. Hypotheses:

- an attribute that differs between the twins (epsilon, BN momentum, align_corners, interpolation
  mode, a scale, pooling ceil_mode / exclusive / output size, padding mode, GELU approximation,
  and any other plain attribute both modules carry under the same name);
- a Linear weight left untransposed; BatchNorm running statistics not loaded; a conv weight with
  its input channels reversed (RGB/BGR) or its kernel flipped;
- an activation missing on the paddle side; height and width swapped.

Failures outside eval forward get their own checks: the running statistics after training (BN
momentum), the loss (attributes of the two loss objects), and crashes (shapes in the error).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rsport.compare import compare

# torch attribute -> (paddle attribute, torch value -> paddle value, what it is)
ATTRIBUTES = {
    "eps": ("_epsilon", lambda v: v, "epsilon"),
    "momentum": ("_momentum", lambda v: None if v is None else 1 - v, "BatchNorm momentum (paddle = 1 - torch)"),
    "approximate": ("_approximate", lambda v: v == "tanh", "GELU approximation"),
    "count_include_pad": ("exclusive", lambda v: not v, "pooling exclusive (torch count_include_pad)"),
    "padding_mode": ("_padding_mode", lambda v: v, "padding mode"),
    "output_size": ("_output_size", lambda v: v, "adaptive pooling output size"),
    "negative_slope": ("_negative_slope", lambda v: v, "negative slope"),
}
SIMPLE = (bool, int, float, str)


@dataclass
class Hypothesis:
    label: str
    apply: object  # () -> undo function


def _plain(value):
    if isinstance(value, (list, tuple)) and all(isinstance(v, SIMPLE) for v in value):
        return tuple(value)
    return value if isinstance(value, SIMPLE) or value is None else _NOT_PLAIN


_NOT_PLAIN = object()


def _same(a, b) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, tuple) and isinstance(b, (int, float)) and not isinstance(b, bool):
        b = (b,) * len(a)
    if isinstance(b, tuple) and isinstance(a, (int, float)) and not isinstance(a, bool):
        a = (a,) * len(b)
    return a == b


def _setter(module, attr, value):
    def apply():
        old = getattr(module, attr)
        setattr(module, attr, value)
        return lambda: setattr(module, attr, old)
    return apply


def attribute_hypotheses(tm, pm) -> list[Hypothesis]:
    """One hypothesis per attribute whose value differs between the twins."""
    found, seen = [], set()
    for t_attr, (p_attr, convert, what) in ATTRIBUTES.items():
        if hasattr(tm, t_attr) and hasattr(pm, p_attr):
            expected = convert(getattr(tm, t_attr))
            actual = getattr(pm, p_attr)
            seen |= {t_attr, p_attr}
            if not _same(actual, expected) and _plain(expected) is not _NOT_PLAIN:
                found.append(Hypothesis(f"{what}: {actual!r} on the paddle side where torch's {getattr(tm, t_attr)!r} "
                                        f"needs {expected!r}", _setter(pm, p_attr, expected)))
    for name, value in vars(tm).items():
        if name.startswith("_") or name in seen or name == "training" or _plain(value) is _NOT_PLAIN:
            continue
        if name in vars(pm) and _plain(vars(pm)[name]) is not _NOT_PLAIN and not _same(vars(pm)[name], value):
            found.append(Hypothesis(f"{name}={vars(pm)[name]!r} on the paddle side, {value!r} in torch",
                                    _setter(pm, name, value)))
    return found


def tensor_hypotheses(ctx, tm, pm) -> list[Hypothesis]:
    """Weight layouts and buffers: an untransposed Linear, missing BN statistics, a conv with its
    input channels reversed or its kernel flipped."""
    fw, tw = ctx.pb, ctx.tb
    kind = fw.layer_type(pm)
    own = fw.own_tensors(pm)
    found = []

    def replace(leaf, value, label):
        def apply():
            old = own[leaf]
            fw.set_own_tensor(pm, leaf, value)
            return lambda: fw.set_own_tensor(pm, leaf, old)
        found.append(Hypothesis(label, apply))

    if kind == "Linear" and own["weight"].ndim == 2 and own["weight"].shape[0] == own["weight"].shape[1]:
        replace("weight", np.ascontiguousarray(own["weight"].T), "Linear weight loaded without the transpose "
                "(torch stores [out, in], paddle [in, out]; a square layer loads either way)")
    if kind == "BatchNorm" and {"_mean", "_variance"} <= set(own):
        t_own = tw.own_tensors(tm)
        if "running_mean" in t_own:
            def stats():
                old = own["_mean"], own["_variance"]
                fw.set_own_tensor(pm, "_mean", t_own["running_mean"].astype(old[0].dtype))
                fw.set_own_tensor(pm, "_variance", t_own["running_var"].astype(old[1].dtype))
                return lambda: (fw.set_own_tensor(pm, "_mean", old[0]), fw.set_own_tensor(pm, "_variance", old[1]))
            found.append(Hypothesis("BatchNorm running statistics not loaded (a converter or a state_dict without "
                                    "BN buffers)", stats))
    if kind == "Conv" and own.get("weight") is not None and own["weight"].ndim == 4:
        weight = own["weight"]
        if weight.shape[1] > 1:
            replace("weight", np.ascontiguousarray(weight[:, ::-1]), "input channel order reversed (RGB vs BGR)")
        if weight.shape[2] > 1 or weight.shape[3] > 1:
            replace("weight", np.ascontiguousarray(weight[:, :, ::-1, ::-1]), "convolution kernel flipped")
    return found


def _error(actual: list, expected: list, tol) -> tuple[float, bool, str | None]:
    """(max_abs, passed, shape note) over flattened outputs."""
    if len(actual) != len(expected):
        return float("inf"), False, f"{len(actual)} outputs where torch has {len(expected)}"
    worst, ok = 0.0, True
    for (_, a), (_, e) in zip(actual, expected):
        if a.shape != e.shape:
            note = (f"output {list(a.shape)} where torch gives {list(e.shape)}: height and width swapped"
                    if a.ndim >= 2 and a.shape[:-2] == e.shape[:-2] and a.shape[-2:] == e.shape[-2:][::-1] else
                    f"output {list(a.shape)} where torch gives {list(e.shape)}")
            return float("inf"), False, note
        diff = compare("x", a, e, tol)
        worst, ok = max(worst, diff.max_abs), ok and diff.passed
    return worst, ok, None


def module_cause(ctx, tmodel, pmodel, where, tol) -> dict:
    """Test the hypotheses on the located module: {"cause", "tested"} (cause None: none fits)."""
    tname = "" if where.module == "(root)" else where.module
    pname = where.paddle_module if tname else ""
    tm, pm = ctx.tb.submodule(tmodel, tname), ctx.pb.submodule(pmodel, pname)
    _, _, t_inputs, _ = ctx.tb.capture(tmodel, ctx.cache["eval"]["x"], [], keep=False, inputs=[tname] if tname else [])
    if tname and tname not in t_inputs:
        return {"cause": None, "tested": []}
    x = ctx.cache["eval"]["x"]
    inputs = t_inputs[tname] if tname else ctx.tb.CallInputs([x], (x,), {})
    expected = ctx.tb.call(tm, inputs)
    before, ok, shape_note = _error(ctx.pb.call(pm, inputs), expected, tol)
    if shape_note and "swapped" in shape_note:
        return {"cause": shape_note, "tested": ["output shape"]}
    if ok:  # alone, on torch's inputs, the module agrees: its inputs were the difference after all
        return {"cause": None, "tested": [], "note": "the module agrees when fed torch's inputs"}
    hypotheses = attribute_hypotheses(tm, pm) + tensor_hypotheses(ctx, tm, pm)
    tested = []
    for hypothesis in hypotheses:
        undo = hypothesis.apply()
        try:
            after, fixed, _ = _error(ctx.pb.call(pm, inputs), expected, tol)
        except Exception:  # noqa: BLE001 - a hypothesis that makes the module crash is not the cause
            after, fixed = float("inf"), False
        finally:
            undo()
        tested.append(hypothesis.label.split(":")[0])
        if fixed:
            return {"cause": f"{hypothesis.label}: max_abs {before:.1e} -> {after:.1e}", "tested": tested}
    from rsport.alignment.localize import kind_of

    if kind_of(type(tm).__name__) != kind_of(type(pm).__name__):
        tested.append("layer class")
        return {"cause": f"a different layer: paddle {type(pm).__name__} where torch has {type(tm).__name__} (e.g. a "
                         f"fixed-kernel pooling for an adaptive one): max_abs {before:.1e}", "tested": tested}
    for label, transform in (("an activation missing on the paddle side (ReLU)", lambda a: np.maximum(a, 0)),
                             ("height and width swapped", lambda a: np.swapaxes(a, -1, -2))):
        actual = [(k, transform(v)) for k, v in ctx.pb.call(pm, inputs)]
        after, fixed, _ = _error(actual, expected, tol)
        tested.append(label)
        if fixed:
            return {"cause": f"{label}: max_abs {before:.1e} -> {after:.1e}", "tested": tested}
    return {"cause": None, "tested": tested}


def describe_none(result: dict) -> str:
    tested = ", ".join(dict.fromkeys(result.get("tested", []))) or "nothing applicable"
    return f"no usual porting mistake explains it (tested: {tested})"


# --- other steps -------------------------------------------------------------------------------
SHAPES = re.compile(r"\[(\d+(?:,\s*\d+){2,})\]|\((\d+(?:,\s*\d+){2,})\)")


def crash_cause(message: str) -> str | None:
    """A crash whose message shows two shapes that differ by a height/width swap."""
    shapes = [tuple(int(v) for v in (a or b).split(",")) for a, b in SHAPES.findall(message)]
    for i, s in enumerate(shapes):
        for t in shapes[i + 1:]:
            if len(s) == len(t) >= 3 and s[0] == t[0] and s[-2:] != t[-2:] and s[-2:] == t[-2:][::-1]:
                return f"height and width swapped: shapes {list(s)} and {list(t)} in the error"
    return None


def loss_cause(ctx, torch_loss, paddle_loss, invoke, outputs, tol) -> dict:
    """Attributes of the two loss objects that differ, each tested on the same model outputs:
    the loss value and its gradient with respect to each output (``invoke(adapter, loss,
    tensors)`` computes the loss)."""
    hypotheses = attribute_hypotheses(torch_loss, paddle_loss)
    if not hypotheses:
        return {"cause": None, "tested": ["loss attributes (none differ)"]}

    def evaluate(fw, loss):
        value, grads = fw.value_and_grads(lambda *t: invoke(fw, loss, list(t)), outputs)
        return [np.asarray(value, dtype=np.float64)] + [np.asarray(g, dtype=np.float64) for g in grads if g is not None]

    def error(found):
        return max(float(np.abs(f - e).max()) for f, e in zip(found, expected))

    def fits(found):
        return all(float(np.abs(f - e).max()) <= tol.bound(float(np.abs(e).max())) for f, e in zip(found, expected))

    expected = evaluate(ctx.tb, torch_loss)
    before = error(evaluate(ctx.pb, paddle_loss))
    tested = []
    for hypothesis in hypotheses:
        undo = hypothesis.apply()
        try:
            found = evaluate(ctx.pb, paddle_loss)
        finally:
            undo()
        tested.append(hypothesis.label.split(":")[0])
        if fits(found):
            return {"cause": f"loss {hypothesis.label}: loss and d loss/d output off by {before:.1e} -> "
                             f"{error(found):.1e}", "tested": tested}
    return {"cause": None, "tested": tested}


def state_cause(ctx, tmodel, pmodel, tensor: str, tol) -> dict:
    """A BatchNorm running statistic that differs after training: BN momentum, checked by one
    train-mode call of that BatchNorm alone from equal statistics on the same input."""
    layer = tensor.rpartition(".")[0]
    try:
        tm, pm = ctx.tb.submodule(tmodel, layer), ctx.pb.submodule(pmodel, layer)
    except KeyError:
        return {"cause": None, "tested": []}
    if ctx.pb.layer_type(pm) != "BatchNorm":
        return {"cause": None, "tested": []}
    hypotheses = [h for h in attribute_hypotheses(tm, pm) if h.label.startswith("BatchNorm momentum")]
    if not hypotheses:
        return {"cause": None, "tested": ["BatchNorm momentum (equal)"]}
    _, _, inputs, _ = ctx.tb.capture(tmodel, ctx.cache["eval"]["x"] if "eval" in ctx.cache else ctx.batch(0)[0], [],
                                     keep=False, inputs=[layer])
    t_own, p_own = ctx.tb.own_tensors(tm), ctx.pb.own_tensors(pm)

    def updated(fw, module, mean_leaf, start):
        fw.set_own_tensor(module, mean_leaf, start)
        fw.call(module, inputs[layer], train=True)
        return fw.own_tensors(module)[mean_leaf]

    start = t_own["running_mean"]
    expected = updated(ctx.tb, tm, "running_mean", start)
    before = float(np.abs(updated(ctx.pb, pm, "_mean", start.astype(p_own["_mean"].dtype)) - expected).max())
    undo = hypotheses[0].apply()
    try:
        after = float(np.abs(updated(ctx.pb, pm, "_mean", start.astype(p_own["_mean"].dtype)) - expected).max())
    finally:
        undo()
        ctx.tb.set_own_tensor(tm, "running_mean", t_own["running_mean"])
        ctx.pb.set_own_tensor(pm, "_mean", p_own["_mean"])
        ctx.pb.set_own_tensor(pm, "_variance", p_own["_variance"])
        ctx.tb.set_own_tensor(tm, "running_var", t_own["running_var"])
    if after <= tol.bound(float(np.abs(expected).max())):
        return {"cause": f"{hypotheses[0].label}: running mean after one step off by {before:.1e} -> {after:.1e}",
                "tested": ["BatchNorm momentum"]}
    return {"cause": None, "tested": ["BatchNorm momentum"]}
