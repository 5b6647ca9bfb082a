"""The torch side of the framework adapter used by convert/, align/ and the tests.

Twins: torch_ref/backend.py and paddle_impl/backend.py expose the same functions, so the
framework-neutral tools call ``backend.build(...)`` without knowing which framework it is.
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from rsport.registry import ModelSpec, resolve
from rsport.rules import TORCH, TensorSpec

SIDE = TORCH
WEIGHTS_SUFFIX = ".pth"
OPTIMIZER_SUFFIX = ".pth"  # FRAMEWORK-DIFF: paddle's convention is .pdopt

LAYER_TYPES = (  # FRAMEWORK-DIFF: layer classes
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "Conv"),  # FRAMEWORK-DIFF: layer classes
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm), "BatchNorm"),  # FRAMEWORK-DIFF: layer classes
    (nn.Linear, "Linear"),
    (nn.LayerNorm, "LayerNorm"),
    (nn.Embedding, "Embedding"),
)

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)  # FRAMEWORK-DIFF: layer classes


class StateError(ValueError):
    """A state dict does not fit a model."""


class SetupError(ValueError):
    """The requested device, precision or process group is not available here."""


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


def as_tensor(value: np.ndarray):
    return torch.from_numpy(np.asarray(value, order="C"))


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


def _flatten(name, output):
    if isinstance(output, (tuple, list)):
        return [(f"{name}[{i}]", value) for i, value in enumerate(output)]
    return [(name, output)]


def capture(model, spec: ModelSpec, x: np.ndarray, names, keep: bool = True):
    """One no-grad forward that also returns the outputs of the named submodules, in the order
    they were first called (``names=None``: every submodule; ``keep=False``: order only)."""
    layers = dict(model.named_modules())  # FRAMEWORK-DIFF: named_modules / named_sublayers
    taps, handles = {}, []

    def hook(name):
        def record(layer, inputs, output):
            for key, value in _flatten(name, output):
                if key not in taps:
                    taps[key] = value.detach().numpy() if keep else None  # FRAMEWORK-DIFF: tensor to numpy
        return record

    for name in (names if names is not None else [n for n in layers if n]):
        handles.append(layers[name].register_forward_hook(hook(name)))  # FRAMEWORK-DIFF: hook API
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
    for layer in model.modules():
        if isinstance(layer, DROPOUT_TYPES) or getattr(type(layer), "is_dropout", False):
            layer.eval()
    return model


def train_pass(model, spec: ModelSpec, loss_fn, x: np.ndarray, label: np.ndarray):
    """Train-mode forward (dropout off), the model's loss and backward: (outputs, loss, grads by name)."""
    train_mode(model)
    for p in model.parameters():
        p.grad = None  # FRAMEWORK-DIFF: clear gradients
    outputs = model(torch.from_numpy(x))
    loss = loss_fn(*outputs, torch.from_numpy(label))
    loss.backward()
    named = dict(zip(spec.train_outputs, outputs))
    grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach().numpy() for k, v in named.items()}, loss.detach().numpy(), grads  # FRAMEWORK-DIFF: tensor to numpy


def train_iterations(model, spec: ModelSpec, loss_fn, batches, recipe):
    """The training loop on fixed batches: loss_i and lr_i per iteration, then the state."""
    from torch_ref.recipe import Recipe

    train_mode(model)
    opt = Recipe(model, recipe)
    losses, lrs = [], []
    for x, label in batches:
        opt.zero_grad()
        outputs = model(torch.from_numpy(x))
        loss = loss_fn(*outputs, torch.from_numpy(label))
        loss.backward()
        lrs.append(opt.lr())
        opt.step()
        losses.append(float(loss.detach()))  # FRAMEWORK-DIFF: detach before float
    model.eval()
    return np.array(losses), np.array(lrs), state_arrays(model)


def trainable_names(model) -> list:
    return [name for name, p in model.named_parameters() if p.requires_grad]  # FRAMEWORK-DIFF: trainable flag


def optimizer_steps(model, grads_per_step, recipe):
    """Only the recipe: feed the given gradients (name -> array per step) to the optimizer, with
    clipping and schedule; return lr_i and the trained parameters after the last step."""
    from torch_ref.recipe import Recipe

    opt = Recipe(model, recipe)
    params = dict(model.named_parameters())
    lrs = []
    for grads in grads_per_step:
        opt.zero_grad()
        sum((params[name] * torch.from_numpy(g)).sum() for name, g in grads.items()).backward()  # grad == g
        lrs.append(opt.lr())
        opt.step()
    return np.array(lrs), {name: p.detach().numpy().copy() for name, p in params.items() if name in grads_per_step[0]}  # FRAMEWORK-DIFF: tensor to numpy


def metrics(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> dict:
    """This framework's metric code on the given predictions and labels."""
    from torch_ref.metrics import confusion_matrix, summarize

    found = summarize(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), num_classes, ignore_index))
    return {name: value.numpy() for name, value in found.items()}


def set_threads(n: int) -> None:
    """Math threads of this framework (for fair timings)."""
    torch.set_num_threads(n)  # FRAMEWORK-DIFF: thread API


# --- training and evaluation (train.py, eval.py) --------------------------------------------------
def reference_state(spec: ModelSpec, variant: str, model) -> dict:
    """The embedded seeded reference weights (torch_ref/reference_weights.py) in this framework's
    naming, for ``model``: the same numbers in both trees."""
    from torch_ref.reference_weights import build_reference

    return state_arrays(build_reference(spec, variant))  # FRAMEWORK-DIFF: the reference is built by torch


def weights_arrays(spec: ModelSpec, model, path) -> dict:
    """Weights for ``model`` from a checkpoint of either framework (plain, wrapped or DDP-prefixed);
    the other framework's file (by suffix) is converted by the registry's rules.
    Raises convert.core.ConversionError."""
    from convert.core import read_source, translate
    from rsport.rules import PADDLE

    other, other_suffix = PADDLE, ".pdparams"  # FRAMEWORK-DIFF: the other framework
    path = Path(path)
    if path.name.endswith(other_suffix):
        return translate(spec, read_source(path, other)[0], other, model)
    return read_source(path, SIDE)[0]


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group of a multi-process launch."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # FRAMEWORK-DIFF: launcher environment
    if world_size == 1:
        return 0, 1, 0
    import torch.distributed as dist  # FRAMEWORK-DIFF: distributed API

    if not dist.is_initialized():  # FRAMEWORK-DIFF: distributed API
        dist.init_process_group("nccl" if device == "gpu" else "gloo")  # FRAMEWORK-DIFF: gloo on CPU
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))  # FRAMEWORK-DIFF: same


def set_device(device: str, local_rank: int = 0):
    """The device to compute on, or SetupError when ``gpu`` is not available."""
    if device == "gpu":
        if not torch.cuda.is_available():  # FRAMEWORK-DIFF: device query
            raise SetupError(f"--device gpu: no CUDA device available to torch {torch.__version__} "  # FRAMEWORK-DIFF: same
                             f"(built with CUDA: {torch.version.cuda})")  # FRAMEWORK-DIFF: same
        return torch.device("cuda", local_rank)  # FRAMEWORK-DIFF: device API
    return torch.device("cpu")  # FRAMEWORK-DIFF: device API


def autocast(enabled: bool, device: str):
    """Mixed precision context: bfloat16 autocast (no loss scaling needed)."""
    return torch.autocast("cuda" if device == "gpu" else "cpu", dtype=torch.bfloat16, enabled=enabled)  # FRAMEWORK-DIFF: autocast API


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)  # FRAMEWORK-DIFF: seed API


def to_device(value: np.ndarray, device):
    return torch.from_numpy(np.asarray(value, order="C")).to(device)  # FRAMEWORK-DIFF: device placement


def float32(outputs):
    """Floating outputs as float32 (the loss runs in float32 under autocast), others unchanged."""
    return [o.float() if o.is_floating_point() else o for o in outputs]  # FRAMEWORK-DIFF: cast API


def distributed(model, world_size: int, device):
    """The model wrapped for data-parallel training (gradients averaged over processes)."""
    if world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel  # FRAMEWORK-DIFF: DDP class

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)  # FRAMEWORK-DIFF: same


def all_reduce_mean(value: float, world_size: int, device) -> float:
    """Mean of a float over the processes (the value itself for one process)."""
    if world_size == 1:
        return value
    import torch.distributed as dist  # FRAMEWORK-DIFF: distributed API

    total = torch.tensor([value], dtype=torch.float64, device=device)  # FRAMEWORK-DIFF: tensor API
    dist.all_reduce(total)
    return float(total[0]) / world_size


def save_optimizer(recipe, model, path) -> None:
    """Optimizer (momentum buffers) and scheduler state of a Recipe, to one file."""
    torch.save({"optimizer": recipe.optimizer.state_dict(), "scheduler": recipe.scheduler.state_dict()}, path)  # FRAMEWORK-DIFF: state API


def load_optimizer(recipe, model, path) -> None:
    """Restore what ``save_optimizer`` wrote (the model's parameters in the same order)."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # FRAMEWORK-DIFF: loader
    recipe.optimizer.load_state_dict(state["optimizer"])  # FRAMEWORK-DIFF: state API
    recipe.scheduler.load_state_dict(state["scheduler"])  # FRAMEWORK-DIFF: state API


def probabilities(model, spec: ModelSpec, x: np.ndarray, device) -> np.ndarray:
    """Eval-mode class probabilities ``[N, K, H, W]`` of a window batch, as numpy float32."""
    with torch.no_grad():
        out = model(to_device(x, device))
    return out.float().cpu().numpy()  # FRAMEWORK-DIFF: tensor to numpy


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """This framework's confusion-matrix code (metrics.py) on numpy predictions and labels."""
    from torch_ref.metrics import confusion_matrix

    return confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), num_classes, ignore_index).numpy()
