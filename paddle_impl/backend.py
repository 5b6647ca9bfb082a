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
