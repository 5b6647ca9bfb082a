"""The torch side of the framework adapter used by convert/, align/ and the tests.

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
    """state_dict name -> TensorSpec(shape, dtype, layer type, leaf)."""
    layers = dict(model.named_sublayers(include_self=True))  # FRAMEWORK-DIFF: named_modules / named_sublayers
    out = {}
    for name, value in model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        out[name] = TensorSpec(tuple(value.shape), dtype_name(value.dtype), layer_type(layers[path]), leaf)
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
    return to_numpy(model.state_dict())


def cast(model, dtype: str):
    """Cast floating parameters and buffers (integer buffers stay)."""
    kept = {name: value.numpy() for name, value in model.named_buffers() if not value.is_floating_point()}  # FRAMEWORK-DIFF: paddle 3.3.1's
    model.to(dtype=dtype)  # FRAMEWORK-DIFF: cast API (Layer.to/type/double cast integer buffers too, e.g. swin's
    layers = dict(model.named_sublayers(include_self=True))  # FRAMEWORK-DIFF: relative_position_index): restore them
    for name, value in kept.items():  # FRAMEWORK-DIFF: same
        path, _, leaf = name.rpartition(".")  # FRAMEWORK-DIFF: same
        layers[path].register_buffer(leaf, paddle.to_tensor(value))  # FRAMEWORK-DIFF: same (persistable, as before)
    return model  # FRAMEWORK-DIFF: same


def forward(model, spec: ModelSpec, x: np.ndarray) -> dict:
    """Run one forward pass without gradients; name the outputs after the spec."""
    names = spec.train_outputs if model.training else spec.eval_outputs
    with paddle.no_grad():
        out = model(paddle.to_tensor(x))
    out = out if isinstance(out, (tuple, list)) else (out,)
    if len(out) != len(names):
        raise StateError(f"{spec.name} returned {len(out)} outputs, the spec names {names}")
    return {name: value.numpy() for name, value in zip(names, out)}


def _flatten(name, output):
    if isinstance(output, (tuple, list)):
        return [(f"{name}[{i}]", value) for i, value in enumerate(output)]
    return [(name, output)]


def capture(model, spec: ModelSpec, x: np.ndarray, names, keep: bool = True):
    """One no-grad forward that also returns the outputs of the named submodules, in the order
    they were first called (``names=None``: every submodule; ``keep=False``: order only)."""
    layers = dict(model.named_sublayers())  # FRAMEWORK-DIFF: named_modules / named_sublayers
    taps, handles = {}, []

    def hook(name):
        def record(layer, inputs, output):
            for key, value in _flatten(name, output):
                if key not in taps:
                    taps[key] = value.numpy() if keep else None  # FRAMEWORK-DIFF: tensor to numpy
        return record

    for name in (names if names is not None else [n for n in layers if n]):
        handles.append(layers[name].register_forward_post_hook(hook(name)))  # FRAMEWORK-DIFF: hook API
    try:
        outputs = forward(model, spec, x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, taps


def train_mode(model):
    """Train mode (batch-statistics BN, running statistics updated) with every dropout layer off:
    dropout draws from each framework's own RNG, so twins are compared with it off, as in
    Paddle's reproduction guide. Layers whose class sets ``is_dropout = True`` (stochastic depth,
    ``DropPath``) count as dropout. Returns the model."""
    model.train()
    for layer in model.sublayers():
        if isinstance(layer, DROPOUT_TYPES) or getattr(type(layer), "is_dropout", False):
            layer.eval()
    return model


def train_pass(model, spec: ModelSpec, loss_fn, x: np.ndarray, label: np.ndarray):
    """Train-mode forward (dropout off), the model's loss and backward: (outputs, loss, grads by name)."""
    train_mode(model)
    for p in model.parameters():
        p.clear_gradient(set_to_zero=False)  # FRAMEWORK-DIFF: clear gradients
    outputs = model(paddle.to_tensor(x))
    loss = loss_fn(*outputs, paddle.to_tensor(label))
    loss.backward()
    named = dict(zip(spec.train_outputs, outputs))
    grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.numpy() for k, v in named.items()}, loss.numpy(), grads  # FRAMEWORK-DIFF: tensor to numpy


def train_iterations(model, spec: ModelSpec, loss_fn, batches, recipe):
    """The training loop on fixed batches: loss_i and lr_i per iteration, then the state."""
    from paddle_impl.recipe import Recipe

    train_mode(model)
    opt = Recipe(model, recipe)
    losses, lrs = [], []
    for x, label in batches:
        opt.zero_grad()
        outputs = model(paddle.to_tensor(x))
        loss = loss_fn(*outputs, paddle.to_tensor(label))
        loss.backward()
        lrs.append(opt.lr())
        opt.step()
        losses.append(float(loss.detach()))  # FRAMEWORK-DIFF: detach before float
    model.eval()
    return np.array(losses), np.array(lrs), state_arrays(model)


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
    paddle.base.core.set_num_threads(n)  # FRAMEWORK-DIFF: paddle has no public setter for dygraph (default 1)


# --- training and evaluation (train.py, eval.py) --------------------------------------------------
def reference_state(spec: ModelSpec, variant: str, model) -> dict:
    """The embedded seeded reference weights (torch_ref/reference_weights.py) in this framework's
    naming, for ``model``: the same numbers in both trees."""
    from torch_ref.reference_weights import build_reference

    from convert.core import backend as side_backend, translate  # FRAMEWORK-DIFF: the reference is built by torch
    from rsport.rules import TORCH  # FRAMEWORK-DIFF: same
    return translate(spec, side_backend(TORCH).state_arrays(build_reference(spec, variant)), TORCH, model)  # FRAMEWORK-DIFF: same


def weights_arrays(spec: ModelSpec, model, path) -> dict:
    """Weights for ``model`` from a checkpoint of either framework (plain, wrapped or DDP-prefixed);
    the other framework's file (by suffix) is converted by the registry's rules.
    Raises convert.core.ConversionError."""
    from convert.core import read_source, translate
    from rsport.rules import TORCH

    other, other_suffix = TORCH, ".pth"  # FRAMEWORK-DIFF: the other framework
    path = Path(path)
    if path.name.endswith(other_suffix):
        return translate(spec, read_source(path, other)[0], other, model)
    return read_source(path, SIDE)[0]


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
