"""The torch side of the framework adapter used by convert/, align/ and the tests.

Twins: torch_ref/backend.py and paddle_impl/backend.py expose the same functions, so the
framework-neutral tools call ``backend.build(...)`` without knowing which framework it is.
"""
import numpy as np
import paddle
import paddle.nn as nn

from rsport.registry import ModelSpec, resolve
from rsport.rules import PADDLE, TensorSpec

SIDE = PADDLE
WEIGHTS_SUFFIX = ".pdparams"

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
    return model.to(dtype=dtype)  # FRAMEWORK-DIFF: cast API


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
    Paddle's reproduction guide. Returns the model."""
    model.train()
    for layer in model.sublayers():
        if isinstance(layer, DROPOUT_TYPES):
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
