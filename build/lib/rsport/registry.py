"""The model registry: one spec per model drives conversion, alignment, export, TIPC and tests."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from rsport.rules import COMMON_RULES, TORCH, Naming, Rule


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class SpecError(ValueError):
    """A model spec is incomplete or cannot be loaded; ``str()`` names what it lacks."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the tools need to know about one model, in framework-neutral terms.

    Required: ``name``, ``torch_entry``, ``paddle_entry``, ``in_channels``, ``num_classes``,
    ``mean``, ``std``; everything else has a default (a model from outside the zoo needs no more).

    Attributes:
        name: registry key, e.g. ``factseg50``.
        torch_entry / paddle_entry: ``module:Class`` import strings of the twins.
        in_channels, num_classes, mean, std, ignore_index: the data contract (mean/std on 0..255).
        summary: one line for listings (``rsport models``).
        reference: provenance of the torch reference (repository, commit, license, paper), shown by
            ``rsport models`` and recorded in conversion manifests.
        torch_loss / paddle_loss: ``module:Class`` of the training loss in each tree, called as
            ``loss(*train_outputs, label)``; without them training is refused and the alignment
            uses a seeded probe loss.
        kwargs / tiny_kwargs: constructor arguments of the full model and of the CI-sized variant.
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
        eval_protocol: how the original evaluates whole scenes (rsport.sliding): ``mode`` "slide"
            (``window``, ``stride``) or "whole" (the scene in one pass), and ``flip`` (horizontal
            flip averaged in); default: FactSeg's / FarSeg's isaid_eval (slide 896 / 512, no flip).
        align_state: values the alignment's starting state sets (``{torch name: value}``), so that
            state-dependent code runs where it matters, e.g. FarSeg's annealing step counter
            mid-schedule, where the focal term of its loss is active.
        lite: the CI-sized training run used by tests and TIPC lite modes (variant, crop,
            iterations, batch size, and optionally ``lr`` where the recipe's learning rate
            does not move a tiny model within those iterations), on the embedded sample data.
    """

    name: str
    torch_entry: str
    paddle_entry: str
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    summary: str = ""
    reference: str = ""
    torch_loss: str | None = None
    paddle_loss: str | None = None
    kwargs: dict = field(default_factory=dict)
    tiny_kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int] = (512, 512)
    verify_input: tuple[int, int, int] = (2, 192, 256)
    tiny_input: tuple[int, int, int] = (2, 64, 96)
    eval_outputs: tuple[str, ...] = ("prob",)
    train_outputs: tuple[str, ...] = ("logit",)
    tolerance: str = "fp32_prob"
    align_input: tuple[int, int, int] = (2, 96, 160)
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
    align_state: dict = field(default_factory=dict)
    eval_protocol: dict = field(default_factory=lambda: dict(EVAL_PROTOCOL))

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise SpecError(f"model spec {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong or missing in this spec, one phrase each (empty when usable)."""
        found = []
        if not isinstance(self.name, str) or not self.name or not self.name.replace("_", "").isalnum():
            found.append(f"name must be a non-empty identifier, got {self.name!r}")
        for what in ("torch_entry", "paddle_entry", "torch_loss", "paddle_loss"):
            value = getattr(self, what)
            if value is None and what.endswith("_loss"):
                continue
            if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
                found.append(f"{what} must be 'module:attribute', got {value!r}")
        if (self.torch_loss is None) != (self.paddle_loss is None):
            found.append("torch_loss and paddle_loss go together (give both or neither)")
        for what in ("in_channels", "num_classes"):
            if not isinstance(getattr(self, what), int) or getattr(self, what) < 1:
                found.append(f"{what} must be a positive int, got {getattr(self, what)!r}")
        if isinstance(self.in_channels, int) and (len(tuple(self.mean)) != self.in_channels
                                                  or len(tuple(self.std)) != self.in_channels):
            found.append(f"mean/std need {self.in_channels} values (one per input channel)")
        for what in ("verify_input", "tiny_input", "align_input"):
            value = tuple(getattr(self, what))
            if len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
                found.append(f"{what} must be (batch, H, W), got {value!r}")
        if not self.eval_outputs or not self.train_outputs:
            found.append("eval_outputs and train_outputs must name what forward returns")
        protocol = self.eval_protocol
        if protocol.get("mode") not in ("slide", "whole") or not isinstance(protocol.get("flip", False), bool) or (
                protocol.get("mode") == "slide" and not all(isinstance(protocol.get(k), int) and protocol[k] > 0
                                                            for k in ("window", "stride"))):
            found.append(f"eval_protocol must be mode 'slide' (window, stride > 0) or 'whole', flip a bool; got "
                         f"{protocol!r}")
        kind = self.recipe.get("optimizer", "sgd")
        needed = RECIPE_KEYS.get(kind)
        if needed is None:
            found.append(f"recipe optimizer {kind!r} is not one of {', '.join(RECIPE_KEYS)}")
        elif [k for k in needed if k not in self.recipe]:
            found.append(f"recipe ({kind}) lacks {', '.join(k for k in needed if k not in self.recipe)}")
        return found

    def has_loss(self) -> bool:
        return self.torch_loss is not None and self.paddle_loss is not None

    def namings(self, side: str) -> dict[str, Naming]:
        """Other implementations' namings accepted for a source of framework ``side``."""
        return self.torch_namings if side == TORCH else self.paddle_namings

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

# FactSeg's / FarSeg's isaid_eval.py: the original sliding window, probabilities averaged, no flip.
EVAL_PROTOCOL = dict(mode="slide", window=896, stride=512, flip=False)

# What each optimizer kind of a recipe needs (torch_ref/recipe.py and paddle_impl/recipe.py).
RECIPE_KEYS = {"sgd": ("lr", "momentum", "weight_decay", "clip_norm", "power", "max_iters"),
               "adamw": ("lr", "betas", "eps", "weight_decay", "no_decay_keys", "power", "max_iters", "min_lr",
                         "warmup_iters", "warmup_ratio")}

# Lite training (tests, TIPC lite modes): the tiny variant on small crops of the sample data.
LITE_TRAIN = dict(variant="tiny", crop=(128, 128), iters=40, batch_size=2)

_REGISTRY: dict[str, ModelSpec] = {}
ENTRY_POINT_GROUP = "rsport.models"  # installed packages register models here (see load_spec)
_LOADED = {"zoo": False, "entry_points": False}


def register(spec: ModelSpec) -> ModelSpec:
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"expected a rsport.ModelSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        if _REGISTRY[spec.name] is spec:
            return spec
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_zoo() -> None:
    if not _LOADED["zoo"]:
        _LOADED["zoo"] = True
        importlib.import_module("rsport.zoo")
    if not _LOADED["entry_points"]:
        _LOADED["entry_points"] = True
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUP):
            load_spec(entry.value, origin=f"entry point {entry.name!r} ({entry.dist.name if entry.dist else '?'})")


def load_spec(target: str, origin: str | None = None) -> list[str]:
    """Register the model spec(s) found at ``target`` and return their names.

    ``target`` is ``package.module`` (importing it registers its specs, or it holds ``SPEC`` /
    ``SPECS``) or ``package.module:ATTR`` (a ModelSpec, a list of them, or a function returning
    either). Raises SpecError naming what is wrong."""
    where = origin or f"--spec {target}"
    module_name, _, attr = str(target).partition(":")
    before = set(_REGISTRY)
    try:
        module = importlib.import_module(module_name)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    except ImportError as err:
        raise SpecError(f"{where}: cannot import {module_name!r}: {err}") from None
    except TypeError as err:  # e.g. ModelSpec(...) without a required field
        raise SpecError(f"{where}: {module_name} failed to build its spec: {err}") from None
    if attr:
        if not hasattr(module, attr):
            raise SpecError(f"{where}: {module_name} has no attribute {attr!r}")
        found = getattr(module, attr)
        found = found() if callable(found) and not isinstance(found, ModelSpec) else found
    else:
        found = getattr(module, "SPECS", getattr(module, "SPEC", None))
    specs = [] if found is None else (list(found) if isinstance(found, (list, tuple)) else [found])
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            raise SpecError(f"{where}: expected a rsport.ModelSpec, got {type(spec).__name__}")
        register(spec)
    names = [n for n in _REGISTRY if n not in before] or [s.name for s in specs]
    if not names:
        raise SpecError(f"{where}: {module_name} registers no ModelSpec (call rsport.register(ModelSpec(...)) "
                        f"in it, or define SPEC)")
    return names


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
