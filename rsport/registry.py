"""The model registry: one spec per model drives conversion, alignment, export, TIPC and tests."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from rsport.rules import COMMON_RULES, TORCH, Naming, Rule


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything the tools need to know about one model, in framework-neutral terms.

    Attributes:
        name: registry key, e.g. ``factseg50``.
        summary: one line for listings.
        torch_entry / paddle_entry: ``module:Class`` import strings of the twins.
        torch_loss / paddle_loss: ``module:Class`` of the training loss in each tree.
        kwargs / tiny_kwargs: constructor arguments of the full model and of the CI-sized variant.
        in_channels, num_classes, mean, std, ignore_index: the data contract (mean/std on 0..255).
        input_size: default (H, W) of the training patch / benchmark input.
        verify_input / tiny_input: (batch, H, W) of the conversion check fixture per variant.
        eval_outputs / train_outputs: names of what forward returns in each mode.
        rules: model-specific rename rules, tried before ``COMMON_RULES``.
        paddle_namings: other implementations' paddle namings accepted as conversion sources
            (name -> Naming, mapped onto ours first), e.g. PaddleRS's published weights.
        torch_namings: the same for torch-side sources (e.g. mmseg 1.x's Swin naming); in each
            Naming rule, ``torch`` is our template and ``paddle`` the foreign torch name.
        ignore: anchored regexes of source keys that may be skipped (reported when used).
        tolerance: the fp32 profile of the eval outputs.
        reference: provenance of the torch reference (repository, commit, license, paper).
        align_input: (batch, H, W) of the alignment harness at the default size (batch >= 2).
        taps: named submodules compared in forward order to localise a divergence.
        recipe: the original training recipe (SGD momentum, weight decay, global-norm clip,
            poly LR), used by the optimizer and train steps and by training.
        profile_overrides: per-model tolerance overrides for the alignment harness,
            ``{(dtype, kind): profile}``; the profile's calibration text records the measured
            error and the reason.
        dataset: the data layout the model trains and evaluates on (``rsport.data``):
            ``isaid`` (RGB scenes + color-map masks) or ``sen12ms_s1`` (Sentinel-1 VV/VH GeoTIFFs
            + DFC2020 / SEN12MS land-cover labels).
        lite: the CI-sized training run used by tests and TIPC lite modes (variant, crop,
            iterations, batch size, and optionally ``lr`` where the recipe's learning rate
            does not move a tiny model within those iterations), on the embedded sample data.
    """

    name: str
    summary: str
    torch_entry: str
    paddle_entry: str
    torch_loss: str
    paddle_loss: str
    kwargs: dict
    tiny_kwargs: dict
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]
    verify_input: tuple[int, int, int]
    tiny_input: tuple[int, int, int]
    eval_outputs: tuple[str, ...]
    train_outputs: tuple[str, ...]
    tolerance: str
    reference: str
    align_input: tuple[int, int, int] = (2, 128, 128)
    taps: tuple[str, ...] = ()
    recipe: dict = field(default_factory=lambda: dict(DEFAULT_RECIPE))
    profile_overrides: dict = field(default_factory=dict)
    ignore_index: int = 255
    dataset: str = "isaid"
    lite: dict = field(default_factory=lambda: dict(LITE_TRAIN))
    rules: tuple[Rule, ...] = ()
    paddle_namings: dict[str, Naming] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    torch_namings: dict[str, Naming] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"{self.name}: mean/std need {self.in_channels} values")

    def namings(self, side: str) -> dict[str, Naming]:
        """Other implementations' namings accepted for a source of framework ``side``."""
        return self.torch_namings if side == TORCH else self.paddle_namings

    def all_rules(self) -> tuple[Rule, ...]:
        return tuple(self.rules) + COMMON_RULES

    def model_kwargs(self, variant: str) -> dict:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        kwargs = dict(self.kwargs)
        if variant == "tiny":
            kwargs.update(self.tiny_kwargs)
        return kwargs

    def fixture_shape(self, variant: str) -> tuple[int, int, int, int]:
        batch, h, w = self.tiny_input if variant == "tiny" else self.verify_input
        return (batch, self.in_channels, h, w)

    def align_shape(self, variant: str) -> tuple[int, int, int, int]:
        batch, h, w = self.tiny_input if variant == "tiny" else self.align_input
        return (batch, self.in_channels, h, w)

    def export_input_spec(self) -> list:
        """[N, C, H, W] with dynamic batch and spatial size."""
        return [None, self.in_channels, None, None]


VARIANTS = ("default", "tiny")

# SGD with momentum, weight decay on every parameter, global-norm clipping, poly LR updated
# every iteration (FactSeg's configs/isaid/factseg.py; shared by the segmentation models here).
DEFAULT_RECIPE = dict(lr=0.007, momentum=0.9, weight_decay=1e-4, clip_norm=35.0, power=0.9, max_iters=60000)

# Lite training (tests, TIPC lite modes): the tiny variant on small crops of the sample data.
LITE_TRAIN = dict(variant="tiny", crop=(128, 128), iters=40, batch_size=2)

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_zoo() -> None:
    importlib.import_module("rsport.zoo")


def names() -> list[str]:
    _load_zoo()
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    _load_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def resolve(entry: str):
    """Import ``module:attr``."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)
