"""The paddle side of the framework adapter (rsport.frameworks) used by the core and the tools.

Twins: torch_ref/backend.py and paddle_impl/backend.py expose the same functions, so the
framework-neutral tools call ``backend.build(...)`` without knowing which framework it is.
"""
import os
from pathlib import Path
import re  # FRAMEWORK-DIFF: optimizer accumulator names

import numpy as np
import paddle
import paddle.nn as nn

from rsport.registry import ModelSpec, resolve
from rsport.rules import PADDLE, TensorSpec

SIDE = PADDLE
WEIGHTS_SUFFIX = ".pdparams"
OPTIMIZER_SUFFIX = ".pdopt"  # FRAMEWORK-DIFF: paddle's convention is .pdopt

LAYER_TYPES = (  # FRAMEWORK-DIFF: layer classes
    ((nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Conv2DTranspose), "Conv"),  # FRAMEWORK-DIFF: layer classes
    ((nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.SyncBatchNorm), "BatchNorm"),  # FRAMEWORK-DIFF: layer classes
    (nn.Linear, "Linear"),
    (nn.LayerNorm, "LayerNorm"),
    (nn.Embedding, "Embedding"),
)

DROPOUT_TYPES = (nn.Dropout, nn.Dropout2D, nn.Dropout3D)  # FRAMEWORK-DIFF: layer classes (paddle has no Dropout1D)


class StateError(ValueError):
    """A state dict does not fit a model."""


class SetupError(ValueError):
    """The requested device, precision or process group is not available here."""


def build(spec: ModelSpec, variant: str = "default"):
    """The spec's paddle model in eval mode."""
    model = resolve(spec.paddle_entry)(**spec.model_kwargs(variant))
    model.eval()
    return model


def build_loss(spec: ModelSpec):
    return resolve(spec.paddle_loss)(ignore_index=spec.ignore_index)


def layer_type(layer) -> str:
    return next((name for cls, name in LAYER_TYPES if isinstance(layer, cls)), "Other")


def schema(model) -> dict:
    """state_dict name -> TensorSpec(shape, dtype, layer type, leaf, param or buffer)."""
    layers = dict(model.named_sublayers(include_self=True))  # FRAMEWORK-DIFF: named_modules / named_sublayers
    params = {name for name, _ in model.named_parameters()}
    out = {}
    for name, value in model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        out[name] = TensorSpec(tuple(value.shape), dtype_name(value.dtype), layer_type(layers[path]), leaf,
                               "param" if name in params else "buffer")
    return out


def dtype_name(dtype) -> str:
    return str(dtype).rpartition(".")[2]


def is_tensor(value) -> bool:
    return isinstance(value, paddle.Tensor)


def load_file(path: str, allow_pickle: bool = False):
    """Read a checkpoint file. torch unpickles only tensors and plain containers unless
    ``allow_pickle`` (safe for files from strangers); paddle.load has no such switch."""
    return paddle.load(path)  # FRAMEWORK-DIFF: loader (paddle.load has no weights-only mode)


def as_tensor(value: np.ndarray):
    return paddle.to_tensor(np.asarray(value, order="C"))


def to_numpy(state: dict) -> dict:
    return {name: value.numpy() for name, value in state.items()}  # FRAMEWORK-DIFF: tensor to numpy


def save_file(arrays: dict, path) -> None:
    paddle.save({name: paddle.to_tensor(np.asarray(value, order="C")) for name, value in arrays.items()}, str(path))  # FRAMEWORK-DIFF: saver


def load_state(model, arrays: dict) -> None:
    """Load numpy arrays strictly: same names, shapes and dtypes as the model, or StateError."""
    expected = schema(model)
    problems = [f"missing {name}" for name in expected if name not in arrays]
    problems += [f"unexpected {name}" for name in arrays if name not in expected]
    problems += [f"{name}: shape/dtype {tuple(value.shape)} {value.dtype} != {spec.shape} {spec.dtype}"
                 for name, value in arrays.items() if name in expected
                 for spec in [expected[name]] if (tuple(value.shape), str(value.dtype)) != (spec.shape, spec.dtype)]
    if problems:
        raise StateError(f"{len(problems)} problems: " + "; ".join(problems[:10]))
    missing, unexpected = model.set_state_dict({name: np.asarray(value, order="C") for name, value in arrays.items()})  # FRAMEWORK-DIFF: loader
    if missing or unexpected:  # FRAMEWORK-DIFF: set_state_dict reports instead of raising
        raise StateError(f"paddle did not load {missing} / did not use {unexpected}")  # FRAMEWORK-DIFF: same


def state_arrays(model) -> dict:
    """The model's state as numpy COPIES (a view of a live parameter would follow training)."""
    return {name: np.array(value, copy=True) for name, value in to_numpy(model.state_dict()).items()}


def cast(model, dtype: str):
    """Cast floating parameters and buffers (integer buffers stay)."""
    kept = {name: value.numpy() for name, value in model.named_buffers() if not value.is_floating_point()}  # FRAMEWORK-DIFF: paddle 3.3.1's
    model.to(dtype=dtype)  # FRAMEWORK-DIFF: cast API (Layer.to/type/double cast integer buffers too, e.g. swin's
    layers = dict(model.named_sublayers(include_self=True))  # FRAMEWORK-DIFF: relative_position_index): restore them
    for name, value in kept.items():  # FRAMEWORK-DIFF: same
        path, _, leaf = name.rpartition(".")  # FRAMEWORK-DIFF: same
        layers[path].register_buffer(leaf, paddle.to_tensor(value))  # FRAMEWORK-DIFF: same (persistable, as before)
    return model  # FRAMEWORK-DIFF: same


def flatten(output, prefix: str = "") -> list:
    """(key, tensor) pairs of a forward's output: a tensor is ``prefix`` itself, a tuple/list adds
    ``[i]``, a dict ``[key]``; other values (None, numbers) are skipped."""
    if is_tensor(output):
        return [(prefix, output)]
    if isinstance(output, (tuple, list)):
        return [pair for i, value in enumerate(output) for pair in flatten(value, f"{prefix}[{i}]")]
    if isinstance(output, dict):
        return [pair for key, value in output.items() for pair in flatten(value, f"{prefix}[{key}]")]
    return []


def numpy_of(tensor) -> np.ndarray:
    return tensor.numpy()  # FRAMEWORK-DIFF: tensor to numpy


def run(model, x: np.ndarray) -> list:
    """One forward pass without gradients: the flattened outputs as (key, numpy) pairs."""
    with paddle.no_grad():
        out = model(paddle.to_tensor(x))
    return [(key, numpy_of(value)) for key, value in flatten(out)]


def forward(model, spec: ModelSpec, x: np.ndarray) -> dict:
    """Run one forward pass without gradients; name the outputs after the spec."""
    names = spec.train_outputs if model.training else spec.eval_outputs
    out = run(model, x)
    if len(out) != len(names):
        raise StateError(f"{spec.name} returned {len(out)} outputs, the spec names {names}")
    return {name: value for name, (_, value) in zip(names, out)}


def capture(model, x: np.ndarray, names=None, keep: bool = True, inputs=()):
    """One no-grad forward that also records submodule outputs (``names=None``: every submodule):
    returns (flattened outputs, taps, tapped inputs, order). ``taps`` maps ``name`` (or
    ``name[i]`` for a tuple output) to the first call's output, ``order`` lists the submodules in
    the order their first call RETURNED (children before their parent), ``inputs`` maps each name
    in ``inputs`` to its first call's flattened tensor arguments (positional, then keyword),
    copied when the call starts (before an in-place op can change them). ``keep=False``: order
    only."""
    layers = dict(model.named_sublayers())  # FRAMEWORK-DIFF: named_modules / named_sublayers
    taps, tapped_inputs, order, done, handles = {}, {}, [], set(), []

    def before(name):
        def record(layer, args, kwargs):
            if name not in tapped_inputs:
                tapped_inputs[name] = CallInputs([numpy_of(v) for _, v in flatten((tuple(args), dict(kwargs)))],
                                                 numpy_tree(tuple(args)), numpy_tree(dict(kwargs)))
            return None
        return record

    def after(name):
        def record(layer, args, output):
            if name in done:
                return
            done.add(name)
            order.append(name)
            for key, value in flatten(output, name):
                taps[key] = numpy_of(value) if keep else None
        return record

    missing = [name for name in list(names or ()) + list(inputs) if name not in layers]
    if missing:
        raise StateError(f"no such submodule: {', '.join(missing[:5])}")
    for name in (names if names is not None else [n for n in layers if n]):
        handles.append(layers[name].register_forward_post_hook(after(name)))  # FRAMEWORK-DIFF: hook API
    for name in inputs:
        handles.append(layers[name].register_forward_pre_hook(before(name), with_kwargs=True))  # FRAMEWORK-DIFF: hook API
    try:
        outputs = run(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, taps, tapped_inputs, order


def module_classes(model) -> dict:
    """Submodule name -> class name (the root is '')."""
    return {name: type(layer).__name__ for name, layer in model.named_sublayers(include_self=True)}  # FRAMEWORK-DIFF: named_modules / named_sublayers


class CallInputs(list):
    """The flattened tensor arguments of one call (a list of numpy arrays), with the call's own
    ``args`` and ``kwargs`` (tensors as numpy) to call the module again."""

    def __init__(self, flat, args, kwargs):
        super().__init__(flat)
        self.args, self.kwargs = args, kwargs


def numpy_tree(value):
    """Tensors inside tuples, lists and dicts as numpy copies; other values unchanged."""
    if is_tensor(value):
        return np.array(numpy_of(value), copy=True)
    if isinstance(value, (tuple, list)):
        return type(value)(numpy_tree(v) for v in value)
    if isinstance(value, dict):
        return {k: numpy_tree(v) for k, v in value.items()}
    return value


def tensor_tree(value):
    """The inverse of ``numpy_tree``."""
    if isinstance(value, np.ndarray):
        return as_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(tensor_tree(v) for v in value)
    if isinstance(value, dict):
        return {k: tensor_tree(v) for k, v in value.items()}
    return value


def call(module, inputs: CallInputs, train: bool = False) -> list:
    """Call one module again on recorded inputs, without gradients, in eval or train mode (its
    mode is restored): the flattened outputs as (key, numpy) pairs."""
    was_training = module.training
    train_mode(module) if train else module.eval()
    try:
        with paddle.no_grad():
            out = module(*tensor_tree(inputs.args), **tensor_tree(inputs.kwargs))
    finally:
        train_mode(module) if was_training else module.eval()
    return [(key, numpy_of(value)) for key, value in flatten(out)]


def submodule(model, name: str):
    """The submodule called ``name`` ('' is the model itself)."""
    return dict(model.named_sublayers(include_self=True))[name]  # FRAMEWORK-DIFF: named_modules / named_sublayers


def own_tensors(module) -> dict:
    """The module's own parameters and buffers (not its children's) as numpy copies."""
    return {name: np.array(numpy_of(value), copy=True) for name, value in module.state_dict().items() if "." not in name}


def set_own_tensor(module, leaf: str, value: np.ndarray) -> None:
    """Overwrite one of the module's own parameters or buffers in place (same shape and dtype)."""
    getattr(module, leaf).set_value(np.asarray(value, order="C"))  # FRAMEWORK-DIFF: in-place set


def value_and_grads(fn, arrays: list):
    """``fn(*tensors)`` (a scalar, e.g. a loss on fixed model outputs) and its gradient with respect
    to each floating input (None for the others), as numpy."""
    tensors = [as_tensor(a) for a in arrays]
    for t in tensors:
        if t.is_floating_point():
            t.stop_gradient = False  # FRAMEWORK-DIFF: trainable flag
    out = fn(*tensors)
    out.backward()
    return numpy_of(out), [numpy_of(t.grad) if t.is_floating_point() and t.grad is not None else None for t in tensors]


def is_stochastic(layer) -> bool:
    """Dropout layers, and layers whose class sets ``is_dropout = True`` or is named DropPath
    (stochastic depth)."""
    return (isinstance(layer, DROPOUT_TYPES) or getattr(type(layer), "is_dropout", False)
            or type(layer).__name__ == "DropPath")


def train_mode(model):
    """Train mode (batch-statistics BN, running statistics updated) with every dropout and
    drop-path layer off: they draw from each framework's own RNG, so twins are compared with them
    off, as in Paddle's reproduction guide. Returns the model."""
    model.train()
    for layer in model.sublayers():
        if is_stochastic(layer):
            layer.eval()
    return model


def train_pass(model, loss_fn, x: np.ndarray, label: np.ndarray):
    """Train-mode forward (dropout off), ``loss_fn(output, label)`` and backward: (flattened
    outputs, loss, gradient of every parameter by name, gradient of the loss with respect to
    each output)."""
    train_mode(model)
    for p in model.parameters():
        p.clear_gradient(set_to_zero=False)  # FRAMEWORK-DIFF: clear gradients
    output = model(paddle.to_tensor(x))
    flat = flatten(output)
    for _, value in flat:
        if not value.stop_gradient:  # FRAMEWORK-DIFF: trainable flag
            value.retain_grads()  # FRAMEWORK-DIFF: keep non-leaf gradients
    loss = loss_fn(output, paddle.to_tensor(label))
    loss.backward()
    grads = {name: numpy_of(p.grad) for name, p in model.named_parameters() if p.grad is not None}
    out_grads = {key: numpy_of(v.grad) for key, v in flat if v.grad is not None}
    return [(key, numpy_of(v)) for key, v in flat], numpy_of(loss), grads, out_grads


def train_iterations(model, loss_fn, batches, recipe):
    """The training loop on fixed batches: loss_i and lr_i per iteration, then the state."""
    from paddle_impl.recipe import Recipe

    train_mode(model)
    opt = Recipe(model, recipe)
    losses, lrs = [], []
    for x, label in batches:
        opt.zero_grad()
        loss = loss_fn(model(paddle.to_tensor(x)), paddle.to_tensor(label))
        loss.backward()
        lrs.append(opt.lr())
        opt.step()
        losses.append(float(loss.detach()))  # FRAMEWORK-DIFF: detach before float
    model.eval()
    return np.array(losses), np.array(lrs), state_arrays(model)


def batchnorm_statistics(model, batches) -> dict:
    """Per BatchNorm layer, the float64 mean and unbiased variance over (N, H, W) of the input of
    each call, in train-mode no-grad passes over ``batches`` (dropout off): {name: [(mean, var)]}."""
    layers = {name: layer for name, layer in model.named_sublayers() if layer_type(layer) == "BatchNorm"}  # FRAMEWORK-DIFF: named_modules / named_sublayers
    found = {name: [] for name in layers}

    def hook(name):
        def record(layer, args):
            x = numpy_of(args[0]).astype(np.float64)
            axes = (0, *range(2, x.ndim))
            found[name].append((x.mean(axis=axes), x.var(axis=axes, ddof=1)))
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]  # FRAMEWORK-DIFF: hook API
    train_mode(model)
    try:
        with paddle.no_grad():
            for x in batches:
                model(paddle.to_tensor(x))
    finally:
        for handle in handles:
            handle.remove()
        model.eval()
    return found


def trainable_names(model) -> list:
    return [name for name, p in model.named_parameters() if not p.stop_gradient]  # FRAMEWORK-DIFF: trainable flag


def optimizer_steps(model, grads_per_step, recipe):
    """Only the recipe: feed the given gradients (name -> array per step) to the optimizer, with
    clipping and schedule; return lr_i and the trained parameters after the last step."""
    from paddle_impl.recipe import Recipe

    opt = Recipe(model, recipe)
    params = dict(model.named_parameters())
    lrs = []
    for grads in grads_per_step:
        opt.zero_grad()
        sum((params[name] * paddle.to_tensor(g)).sum() for name, g in grads.items()).backward()  # grad == g
        lrs.append(opt.lr())
        opt.step()
    return np.array(lrs), {name: p.numpy().copy() for name, p in params.items() if name in grads_per_step[0]}  # FRAMEWORK-DIFF: tensor to numpy


def metrics(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> dict:
    """This framework's metric code on the given predictions and labels."""
    from paddle_impl.metrics import confusion_matrix, summarize

    found = summarize(confusion_matrix(paddle.to_tensor(pred), paddle.to_tensor(label), num_classes, ignore_index))
    return {name: value.numpy() for name, value in found.items()}


def set_threads(n: int) -> None:
    """Math threads of this framework (for fair timings)."""
    paddle.base.core.set_num_threads(n)  # FRAMEWORK-DIFF: no public setter in paddle 3.3.1: paddle.set_flags({'FLAGS_paddle_num_threads': n}) after import has no effect (measured; dygraph keeps 1 thread)


# --- training and evaluation (train.py, eval.py) --------------------------------------------------
def reference_state(spec: ModelSpec, variant: str, model) -> dict:
    """The embedded seeded reference weights (rsport/reference.py, one framework-neutral file) in
    this framework's naming, for ``model``: the same numbers in both trees."""
    from rsport.reference import reference_arrays

    return reference_arrays(spec, variant, SIDE, model)


def weights_arrays(spec: ModelSpec, model, path) -> dict:
    """Weights for ``model`` from a checkpoint of either framework (plain, wrapped or DDP-prefixed)
    or a neutral .safetensors; the other framework's file (by suffix) is converted by the
    registry's rules. Raises rsport.weights.ConversionError."""
    from rsport.weights import load_for

    return load_for(spec, model, SIDE, Path(path))


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group of a multi-process launch."""
    world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))  # FRAMEWORK-DIFF: launcher environment
    if world_size == 1:
        return 0, 1, 0
    import paddle.distributed as dist  # FRAMEWORK-DIFF: distributed API

    dist.init_parallel_env()  # FRAMEWORK-DIFF: gloo on CPU, chosen by paddle
    return dist.get_rank(), dist.get_world_size(), dist.ParallelEnv().local_rank  # FRAMEWORK-DIFF: same


def set_device(device: str, local_rank: int = 0):
    """The device to compute on, or SetupError when ``gpu`` is not available."""
    if device == "gpu":
        if not paddle.device.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0:  # FRAMEWORK-DIFF: device query
            raise SetupError(f"--device gpu: no CUDA device available to paddle {paddle.__version__} "  # FRAMEWORK-DIFF: same
                             f"(built with CUDA: {paddle.device.is_compiled_with_cuda()})")  # FRAMEWORK-DIFF: same
        return paddle.set_device(f"gpu:{local_rank}")  # FRAMEWORK-DIFF: device API
    return paddle.set_device("cpu")  # FRAMEWORK-DIFF: device API


def autocast(enabled: bool, device: str):
    """Mixed precision context: bfloat16 autocast (no loss scaling needed)."""
    if enabled and device != "gpu":  # FRAMEWORK-DIFF: measured on paddle 3.3.1
        raise SetupError("--amp: paddle 3.3.1 has no mixed precision on CPU (paddle.amp.auto_cast only acts on "  # FRAMEWORK-DIFF: same
                         "CUDA/XPU/custom devices and warns 'it makes no effect' on CPU; conv2d has no CPU bfloat16 "  # FRAMEWORK-DIFF: same
                         "kernel); use --device gpu, or train without --amp")  # FRAMEWORK-DIFF: same
    return paddle.amp.auto_cast(enable=enabled, level="O1", dtype="bfloat16")  # FRAMEWORK-DIFF: autocast API


def manual_seed(seed: int) -> None:
    paddle.seed(seed)  # FRAMEWORK-DIFF: seed API


def to_device(value: np.ndarray, device):
    return paddle.to_tensor(np.asarray(value, order="C"), place=device)  # FRAMEWORK-DIFF: device placement


def float32(outputs):
    """Floating outputs as float32 (the loss runs in float32 under autocast), others unchanged."""
    return [o.astype("float32") if o.is_floating_point() else o for o in outputs]  # FRAMEWORK-DIFF: cast API


def distributed(model, world_size: int, device):
    """The model wrapped for data-parallel training (gradients averaged over processes)."""
    if world_size == 1:
        return model
    from paddle import DataParallel  # FRAMEWORK-DIFF: DDP class

    return DataParallel(model)  # FRAMEWORK-DIFF: same


def all_reduce_mean(value: float, world_size: int, device) -> float:
    """Mean of a float over the processes (the value itself for one process)."""
    if world_size == 1:
        return value
    import paddle.distributed as dist  # FRAMEWORK-DIFF: distributed API

    total = paddle.to_tensor([value], dtype="float64", place=device)  # FRAMEWORK-DIFF: tensor API
    dist.all_reduce(total)
    return float(total[0]) / world_size


_ACCUMULATOR = re.compile(r"^(?P<param>.+)(?P<acc>_(velocity|moment1|moment2|beta1_pow_acc|beta2_pow_acc)_\d+)$")  # FRAMEWORK-DIFF: paddle's accumulator names (Momentum, AdamW)


def _rename_accumulators(state: dict, names: dict, where: str) -> dict:  # FRAMEWORK-DIFF: accumulators are keyed by
    """Re-key momentum accumulators by ``names`` (parameter name -> name); the scheduler entry stays."""  # FRAMEWORK-DIFF: same
    renamed = {}  # FRAMEWORK-DIFF: paddle's generated parameter names, which depend on what the process built
    for key, value in state.items():  # FRAMEWORK-DIFF: before; saved under the structured names
        match = _ACCUMULATOR.match(key)  # FRAMEWORK-DIFF: same
        if key != "LR_Scheduler" and (match is None or match["param"] not in names):  # FRAMEWORK-DIFF: same
            raise StateError(f"{where}optimizer state entry {key!r} does not belong to a parameter of the model")  # FRAMEWORK-DIFF: same
        renamed[key if match is None else names[match["param"]] + match["acc"]] = value  # FRAMEWORK-DIFF: same
    return renamed  # FRAMEWORK-DIFF: same


def save_optimizer(recipe, model, path) -> None:
    """Optimizer (momentum buffers) and scheduler state of a Recipe, to one file."""
    structured = {p.name: name for name, p in model.named_parameters()}  # FRAMEWORK-DIFF: generated -> structured names
    paddle.save(_rename_accumulators(recipe.optimizer.state_dict(), structured, ""), str(path))  # FRAMEWORK-DIFF: state API


def load_optimizer(recipe, model, path) -> None:
    """Restore what ``save_optimizer`` wrote (the model's parameters in the same order)."""
    generated = {name: p.name for name, p in model.named_parameters()}  # FRAMEWORK-DIFF: back to this process's names
    state = _rename_accumulators(paddle.load(str(path)), generated, f"{path}: ")  # FRAMEWORK-DIFF: loader
    recipe.optimizer.set_state_dict(state)  # FRAMEWORK-DIFF: restores the scheduler too (LR_Scheduler)


def probabilities(model, spec: ModelSpec, x: np.ndarray, device) -> np.ndarray:
    """Eval-mode class probabilities ``[N, K, H, W]`` of a window batch, as numpy float32."""
    with paddle.no_grad():
        out = model(to_device(x, device))
    return out.astype("float32").numpy()  # FRAMEWORK-DIFF: tensor to numpy


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """This framework's confusion-matrix code (metrics.py) on numpy predictions and labels."""
    from paddle_impl.metrics import confusion_matrix

    return confusion_matrix(paddle.to_tensor(pred), paddle.to_tensor(label), num_classes, ignore_index).numpy()
