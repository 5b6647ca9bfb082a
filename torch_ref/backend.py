"""The torch side of the framework adapter used by convert/, align/ and the tests.

Twins: torch_ref/backend.py and paddle_impl/backend.py expose the same functions, so the
framework-neutral tools call ``backend.build(...)`` without knowing which framework it is.
"""
import numpy as np
import torch
import torch.nn as nn

from rsport.registry import ModelSpec, resolve
from rsport.rules import TORCH, TensorSpec

SIDE = TORCH
WEIGHTS_SUFFIX = ".pth"

LAYER_TYPES = (  # FRAMEWORK-DIFF: layer classes
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "Conv"),  # FRAMEWORK-DIFF: layer classes
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm), "BatchNorm"),  # FRAMEWORK-DIFF: layer classes
    (nn.Linear, "Linear"),
    (nn.LayerNorm, "LayerNorm"),
    (nn.Embedding, "Embedding"),
)


class StateError(ValueError):
    """A state dict does not fit a model."""


def build(spec: ModelSpec, variant: str = "default"):
    """The spec's torch model in eval mode."""
    model = resolve(spec.torch_entry)(**spec.model_kwargs(variant))
    model.eval()
    return model


def build_loss(spec: ModelSpec):
    return resolve(spec.torch_loss)(ignore_index=spec.ignore_index)


def layer_type(layer) -> str:
    return next((name for cls, name in LAYER_TYPES if isinstance(layer, cls)), "Other")


def schema(model) -> dict:
    """state_dict name -> TensorSpec(shape, dtype, layer type, leaf)."""
    layers = dict(model.named_modules())  # FRAMEWORK-DIFF: named_modules / named_sublayers
    out = {}
    for name, value in model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        out[name] = TensorSpec(tuple(value.shape), dtype_name(value.dtype), layer_type(layers[path]), leaf)
    return out


def dtype_name(dtype) -> str:
    return str(dtype).rpartition(".")[2]


def is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def load_file(path: str, allow_pickle: bool = False):
    """Read a checkpoint file. torch unpickles only tensors and plain containers unless
    ``allow_pickle`` (safe for files from strangers); paddle.load has no such switch."""
    return torch.load(path, map_location="cpu", weights_only=not allow_pickle)  # FRAMEWORK-DIFF: loader


def to_numpy(state: dict) -> dict:
    return {name: value.detach().cpu().numpy() for name, value in state.items()}  # FRAMEWORK-DIFF: tensor to numpy


def save_file(arrays: dict, path) -> None:
    torch.save({name: torch.from_numpy(np.asarray(value, order="C")) for name, value in arrays.items()}, path)  # FRAMEWORK-DIFF: saver


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
    model.load_state_dict({name: torch.from_numpy(np.asarray(value, order="C")) for name, value in arrays.items()}, strict=True)  # FRAMEWORK-DIFF: loader


def state_arrays(model) -> dict:
    return to_numpy(model.state_dict())


def cast(model, dtype: str):
    """Cast floating parameters and buffers (integer buffers stay)."""
    return model.to(getattr(torch, dtype))  # FRAMEWORK-DIFF: cast API


def forward(model, spec: ModelSpec, x: np.ndarray) -> dict:
    """Run one forward pass without gradients; name the outputs after the spec."""
    names = spec.train_outputs if model.training else spec.eval_outputs
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = out if isinstance(out, (tuple, list)) else (out,)
    if len(out) != len(names):
        raise StateError(f"{spec.name} returned {len(out)} outputs, the spec names {names}")
    return {name: value.numpy() for name, value in zip(names, out)}
