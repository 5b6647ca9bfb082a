"""A Pair: the two models to align and everything the steps need to know about them.

A registered model becomes a Pair through ``from_spec`` (its twins, the embedded reference or a
checkpoint, the spec's loss, recipe, outputs, taps and tolerances); models a user holds in
memory become one through ``from_models`` (``rsport.align_pair``). The steps only see the Pair.

Weights: both models start from one state. By default the torch model's own weights are
mapped onto the paddle model through rename rules (the user's, then the common BatchNorm
rules); when no rule table is given and the names do not match, tensors are mapped by structure
(rsport.automap: module call order and shapes), strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rsport.fixtures import generic_image_batch, image_batch, label_batch_for
from rsport.frameworks import adapter
from rsport.registry import ModelSpec
from rsport.rules import (COMMON_RULES, LAYER_OPS, PADDLE, TORCH, Plan, TensorSpec, apply_plan, first_match,
                          format_report, make_plan)

FIXTURE_SEED = 2024
WEIGHT_SOURCES = ("torch", "paddle", "as_is")


class PairError(ValueError):
    """A pair cannot be aligned as given (bad argument, weights that do not map); ``str()`` says why."""


@dataclass
class Pair:
    """Two models (torch, paddle) with one starting state, and how to feed and judge them.

    Attributes:
        name: the label of the pair in reports and output folders.
        torch_model / paddle_model: the models (eval mode).
        torch_state / paddle_state: the starting state of each, numpy, each in its own naming.
        plan / rules / paddle_schema: the checked torch -> paddle tensor mapping and its rules.
        eval_outputs / train_outputs: names of the flattened outputs (None: ``output[...]``).
        loss_fns: (torch, paddle) callables ``fn(output, label) -> scalar`` or None (probe loss).
        recipe: the optimizer recipe of the optimizer and train steps (rsport.registry).
        num_classes / ignore_index: the label contract (metric step; seeded labels).
        image_shapes: [N, C, H, W] of each alignment size.
        images / labels: the user's batches (None: seeded fixtures).
        taps: declared submodules, compared and reported as a summary.
        output_profile / profile_overrides: tolerance profile of the eval outputs in float32, and
            per (dtype, kind) overrides.
        mutate_paddle: called on the freshly loaded paddle model (tests inject porting bugs).
        spec: the registered spec behind the pair, if any.
        notes: what the pair builder decided (reported).
    """

    name: str
    torch_model: object
    paddle_model: object
    torch_state: dict
    paddle_state: dict
    plan: Plan
    rules: tuple
    paddle_schema: dict
    image_shapes: list
    eval_outputs: tuple | None = None
    train_outputs: tuple | None = None
    loss_fns: tuple | None = None
    recipe: dict = field(default_factory=dict)
    num_classes: int | None = None
    ignore_index: int = 255
    images: list | None = None
    labels: list | None = None
    taps: tuple = ()
    output_profile: str = "fp32_prob"
    profile_overrides: dict = field(default_factory=dict)
    mutate_paddle: Callable | None = None
    spec: ModelSpec | None = None
    notes: list = field(default_factory=list)
    mean: tuple | None = None
    std: tuple | None = None

    # --- models and states --------------------------------------------------------------------
    def models(self):
        return self.torch_model, self.paddle_model

    def states(self):
        return self.torch_state, self.paddle_state

    def to_paddle(self, arrays: dict) -> dict:
        """Torch-named results (gradients, parameters, states) in paddle naming and layout."""
        schema = {}
        for key, value in arrays.items():
            rule, groups = first_match(self.rules, key, TORCH)
            name = rule.render(groups, PADDLE) if rule else None
            if name in self.paddle_schema:
                spec = self.paddle_schema[name]
                shape = np.shape(value)[::-1] if LAYER_OPS.get((spec.layer_type, spec.leaf)) else np.shape(value)
                schema[name] = TensorSpec(tuple(shape), str(np.asarray(value).dtype), spec.layer_type, spec.leaf)
        plan = make_plan({k: (np.shape(v), str(np.asarray(v).dtype)) for k, v in arrays.items()}, schema, self.rules,
                         TORCH, ignore=[r"(.*\.)?num_batches_tracked"])
        if not plan.ok:
            raise ValueError(format_report(plan, "torch results do not map onto paddle names"))
        return apply_plan(plan, arrays, schema, self.rules)

    # --- outputs ------------------------------------------------------------------------------
    def name_outputs(self, flat: list, train: bool) -> dict:
        """(key, array) pairs of a forward's flattened output, under the declared names."""
        names = self.train_outputs if train else self.eval_outputs
        if names is None:
            return {f"output{key}": value for key, value in flat}
        if len(flat) != len(names):
            raise ValueError(f"{self.name} returned {len(flat)} outputs in {'train' if train else 'eval'} mode, "
                             f"declared: {', '.join(names)}")
        return {name: value for name, (_, value) in zip(names, flat)}

    def has_loss(self) -> bool:
        return self.loss_fns is not None or (self.spec is not None and self.spec.has_loss())

    def loss_for(self, side: str):
        """``fn(output, label)`` of ``side``: the pair's loss (a registered model's is built by the
        adapter at each call, as training builds it), or the probe loss."""
        if self.loss_fns is not None:
            return self.loss_fns[0 if side == TORCH else 1]
        if self.spec is not None and self.spec.has_loss():
            return spec_loss(adapter(side).build_loss(self.spec))
        return probe_loss(adapter(side))

    # --- data ---------------------------------------------------------------------------------
    def image_shape(self, size: int = 0) -> tuple:
        return tuple(self.image_shapes[size % len(self.image_shapes)])

    def make_image(self, index: int, size: int, dtype: str) -> np.ndarray:
        if self.images is not None:  # the user's batch, or the same batch turned on its side
            image = np.asarray(self.images[index % len(self.images)]).astype(dtype)
            if size == 0:
                return image
            if self.image_shape(size) == image.shape[:2] + image.shape[2:][::-1]:
                return np.ascontiguousarray(np.swapaxes(image, -1, -2))
        shape = self.image_shape(size)
        if self.spec is not None:
            return image_batch(self.spec, shape, FIXTURE_SEED + index + 1000 * size, dtype)
        return generic_image_batch(shape, FIXTURE_SEED + index + 1000 * size, dtype, self.mean, self.std)

    def make_label(self, index: int, size: int) -> np.ndarray:
        if self.labels is not None:
            label = np.asarray(self.labels[index % len(self.labels)])
            if size == 0:
                return label
            if self.image_shape(size)[2:] == label.shape[-2:][::-1]:
                return np.ascontiguousarray(np.swapaxes(label, -1, -2))
        n, _, h, w = self.image_shape(size)
        if self.num_classes is None:  # nothing uses labels (probe loss): a placeholder the steps can save
            return np.zeros((n, h, w), dtype=np.int64)
        return label_batch_for(self.num_classes, self.ignore_index, (n, h, w), FIXTURE_SEED + 100 + index + 1000 * size)


def probe_loss(fw):
    """The loss used when a pair has none: sum over the outputs of mean(output * w), with w a
    fixed seeded array per output shape (identical in both frameworks), so that the gradient
    reaching each output element differs and a transposed or permuted output cannot hide."""
    def loss(output, label):
        total = None
        for key, value in fw.flatten(output):
            weights = np.random.default_rng([7, *value.shape]).standard_normal(tuple(value.shape))
            term = (value * fw.as_tensor(weights.astype(fw.dtype_name(value.dtype)))).mean()
            total = term if total is None else total + term
        if total is None:
            raise PairError("the model returned no tensor to build a probe loss from")
        return total
    return loss


def geometry_sizes(shape) -> list:
    """The alignment sizes of a batch shape [N, C, H, W]: itself and, when H != W, the same batch
    turned on its side (W x H). A height/width mix-up or a fixed-size pooling can agree at one size
    by accident, not at two with swapped aspect ratios."""
    n, c, h, w = shape
    return [tuple(shape)] + ([(n, c, w, h)] if h != w else [])


def align_recipe(recipe: dict) -> dict:
    """The recipe as the optimizer and train steps use it: the schedule starts right after its
    warmup (if any), where the learning rate really moves the weights (in warmup it starts at
    lr x warmup_ratio, e.g. 6e-11, and any update rule would pass)."""
    return dict(recipe, start_iter=recipe.get("start_iter", recipe.get("warmup_iters") or 0))


def spec_loss(loss):
    """A registered loss ``loss(*outputs, label)`` as ``fn(output, label)``."""
    def fn(output, label):
        return loss(*(output if isinstance(output, (tuple, list)) else (output,)), label)
    return fn


# --- building pairs ------------------------------------------------------------------------------
def from_spec(spec: ModelSpec, variant: str = "default", torch_ckpt=None, mutate_paddle=None) -> Pair:
    """The pair of a registered model: its twins with the embedded reference (or ``torch_ckpt``)."""
    from rsport.reference import reference_arrays
    from rsport.weights import load_for, translate

    tb, pb = adapter(TORCH), adapter(PADDLE)
    tmodel, pmodel = tb.build(spec, variant), pb.build(spec, variant)
    if torch_ckpt is not None:
        torch_state = load_for(spec, tmodel, TORCH, torch_ckpt)
    else:
        torch_state = reference_arrays(spec, variant, TORCH, tmodel)
    for name, value in spec.align_state.items():
        if name not in torch_state:
            raise PairError(f"{spec.name}: align_state names {name!r}, which the torch model does not have")
        torch_state[name] = np.full_like(torch_state[name], value)
    tb.load_state(tmodel, torch_state)
    torch_state = tb.state_arrays(tmodel)
    paddle_schema = pb.schema(pmodel)
    paddle_state = translate(spec, torch_state, TORCH, pmodel)
    rules = spec.all_rules()
    plan = make_plan({k: (v.shape, str(v.dtype)) for k, v in torch_state.items()}, paddle_schema, rules, TORCH,
                     spec.ignore)
    return Pair(
        name=spec.name, torch_model=tmodel, paddle_model=pmodel, torch_state=torch_state,
        paddle_state=paddle_state, plan=plan, rules=rules, paddle_schema=paddle_schema,
        image_shapes=geometry_sizes(spec.align_shape(variant)), eval_outputs=tuple(spec.eval_outputs),
        train_outputs=tuple(spec.train_outputs), recipe=align_recipe(spec.recipe), num_classes=spec.num_classes, ignore_index=spec.ignore_index,
        taps=tuple(spec.taps), output_profile=spec.tolerance, profile_overrides=dict(spec.profile_overrides),
        mutate_paddle=mutate_paddle, spec=spec, mean=tuple(spec.mean), std=tuple(spec.std))


def map_weights(torch_model, paddle_model, rules=None, ignore=(), example=None) -> tuple[Plan, tuple, list]:
    """The checked torch -> paddle tensor mapping: the given rules (plus the common BatchNorm
    rules), or, with no rules given and names that do not match, a structural mapping
    (rsport.automap). Returns (plan, rules, notes); PairError when neither works."""
    from rsport import automap

    tb, pb = adapter(TORCH), adapter(PADDLE)
    source = {k: (v.shape, str(v.dtype)) for k, v in tb.state_arrays(torch_model).items()}
    target = pb.schema(paddle_model)
    table = tuple(rules or ()) + COMMON_RULES
    plan = make_plan(source, target, table, TORCH, ignore)
    if plan.ok:
        return plan, table, ([f"weights mapped by {len(tuple(rules))} given rules + the common rules"] if rules
                             else ["weights mapped by name (common rules: BatchNorm buffers)"])
    if rules:
        raise PairError(format_report(plan, "the given rules do not map the torch weights onto the paddle model"))
    if example is None:
        raise PairError(format_report(plan, "names do not match and no example input to map by structure"))
    try:
        found = automap.structural_rules(torch_model, paddle_model, example)
    except automap.AmbiguousMapping as err:
        raise PairError(str(err)) from None
    table = tuple(found.rules) + COMMON_RULES
    plan = make_plan(source, target, table, TORCH, ignore)
    if not plan.ok:
        raise PairError(format_report(plan, "the structural mapping is not a bijection"))
    return plan, table, [f"names differ: {len(found.rules)} tensors mapped by structure (module call order and "
                         f"shapes); rsport.automap.write_rules() saves the table"] + found.notes


def randomize_default_bn(torch_model, state: dict, seed: int = FIXTURE_SEED) -> tuple[dict, int]:
    """Seeded, non-default BatchNorm running statistics where EVERY BatchNorm layer still holds
    the defaults (mean 0, var 1, i.e. untrained weights): with defaults, a port or converter that
    forgets the BN buffers would agree by accident. Returns (state, number of layers changed)."""
    schema = adapter(TORCH).schema(torch_model)
    layers = sorted({name.rpartition(".")[0] for name, t in schema.items()
                     if t.layer_type == "BatchNorm" and t.leaf in ("running_mean", "running_var")})
    if not layers or any(np.any(state[f"{layer}.running_mean"] != 0) or np.any(state[f"{layer}.running_var"] != 1)
                         for layer in layers):
        return state, 0
    state = dict(state)
    for i, layer in enumerate(layers):
        rng = np.random.default_rng([seed, i])
        mean, var = state[f"{layer}.running_mean"], state[f"{layer}.running_var"]
        state[f"{layer}.running_mean"] = (0.1 * rng.standard_normal(mean.shape)).astype(mean.dtype)
        state[f"{layer}.running_var"] = np.exp(0.2 * rng.standard_normal(var.shape)).astype(var.dtype)
    return state, len(layers)


def from_models(torch_model, paddle_model, inputs, *, labels=None, loss_fns=None, weights="torch", rules=None,
                ignore=(), recipe=None, num_classes=None, ignore_index=255, output_names=None, taps=(),
                name="pair", output_profile="fp32_prob", profile_overrides=None, sizes=None,
                randomize_bn: bool = True) -> Pair:
    """The pair of two models a user holds in memory (see rsport.align_pair for the arguments)."""
    from rsport.registry import DEFAULT_RECIPE

    tb, pb = adapter(TORCH), adapter(PADDLE)
    if weights not in WEIGHT_SOURCES:
        raise PairError(f"weights={weights!r}: expected one of {', '.join(WEIGHT_SOURCES)}")
    images = _batches(inputs)
    if loss_fns is not None and (not isinstance(loss_fns, (tuple, list)) or len(loss_fns) != 2
                                 or not all(callable(f) for f in loss_fns)):
        raise PairError("loss_fns must be a (torch_fn, paddle_fn) pair of callables fn(output, label) -> scalar")
    label_list = _batches(labels, "labels") if labels is not None else None
    if loss_fns is not None and label_list is None and num_classes is None:
        raise PairError("a loss needs labels: pass labels=... or num_classes=... (seeded segmentation labels)")
    if images[0].ndim != 4:
        raise PairError(f"inputs: expected batches [N, C, H, W], got shape {list(images[0].shape)}")
    shapes = geometry_sizes(images[0].shape) if sizes is None else [tuple(images[0].shape)] + [
        (images[0].shape[0], images[0].shape[1], h, w) for h, w in sizes]
    square = images[0].shape[2] == images[0].shape[3] and not sizes
    tmodel, pmodel = torch_model, paddle_model
    tmodel.eval()
    pmodel.eval()
    example = images[0].astype(str(_float_dtype(tb.state_arrays(tmodel))))
    plan, table, notes = map_weights(tmodel, pmodel, rules, ignore, example)
    paddle_schema = pb.schema(pmodel)
    torch_state, paddle_state = tb.state_arrays(tmodel), pb.state_arrays(pmodel)
    if weights == "paddle":
        back = make_plan({k: (v.shape, str(v.dtype)) for k, v in paddle_state.items()}, tb.schema(tmodel), table,
                         PADDLE, ignore)
        if not back.ok:
            raise PairError(format_report(back, "the paddle weights do not map back onto the torch model"))
        torch_state = apply_plan(back, paddle_state, tb.schema(tmodel), table)
    if weights == "as_is":
        notes.append("each model keeps its own weights (weights='as_is')")
    else:
        changed = 0
        if randomize_bn:
            torch_state, changed = randomize_default_bn(tmodel, torch_state)
        paddle_state = apply_plan(plan, torch_state, paddle_schema, table)
        notes.append(f"both start from the {weights} model's weights"
                     + (f"; its {changed} BatchNorm layers held the default statistics (mean 0, var 1), replaced "
                        f"by seeded ones so that a forgotten BN buffer cannot agree by accident" if changed else ""))
    return Pair(
        name=name, torch_model=tmodel, paddle_model=pmodel, torch_state=torch_state, paddle_state=paddle_state,
        plan=plan, rules=table, paddle_schema=paddle_schema, image_shapes=shapes,
        eval_outputs=_names(output_names, 0), train_outputs=_names(output_names, 1),
        loss_fns=tuple(loss_fns) if loss_fns is not None else None,
        recipe=align_recipe(dict(DEFAULT_RECIPE, **(recipe or {}))), num_classes=num_classes, ignore_index=ignore_index,
        images=images, labels=label_list, taps=tuple(taps), output_profile=output_profile,
        profile_overrides=dict(profile_overrides or {}),
        notes=notes + (["the input is square and no other size was given: a height/width mix-up cannot show; "
                        "pass a batch with H != W"] if square else []))


def _float_dtype(state: dict):
    return next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.dtype("float32"))


def _batches(value, what: str = "inputs") -> list:
    """A batch array or a list of them, as a list of numpy arrays."""
    if value is None:
        raise PairError(f"{what} is required: a numpy batch [N, C, H, W] or a list of batches")
    batches = list(value) if isinstance(value, (list, tuple)) else [value]
    arrays = [np.asarray(b) for b in batches]
    if not arrays or any(a.dtype == object for a in arrays):
        raise PairError(f"{what}: expected numpy arrays, got {type(value).__name__}")
    if what == "inputs" and any(a.ndim < 1 or a.dtype.kind != "f" for a in arrays):
        raise PairError("inputs: expected floating-point numpy batches")
    return arrays


def _names(output_names, index: int):
    if output_names is None:
        return None
    if isinstance(output_names, dict):
        found = output_names.get("train" if index else "eval")
        return tuple(found) if found is not None else None
    return tuple(output_names)
