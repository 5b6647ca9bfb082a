"""Framework-neutral checkpoint handling: unwrapping containers and explaining failures.

Real checkpoints carry more than weights. The layouts handled here, checked against the
projects that write them:

- a plain ``state_dict`` (PaddleSeg's and PaddleRS's ``model.pdparams``, ``torch.save(model.state_dict())``);
- SimpleCV / FactSeg / FarSeg: ``{'model': state_dict, 'opt': optimizer state, 'global_step': int}``
  (``simplecv/util/checkpoint.py``), published with a DDP ``module.`` prefix on every key;
- mmcv / mmseg 0.x and mmengine / mmseg 1.x: ``{'meta': dict, 'state_dict': state_dict,
  'optimizer': optimizer state}`` (mmengine adds ``message_hub``, ``param_schedulers``);
- timm: ``{'state_dict': ..., 'state_dict_ema': ..., 'optimizer': ..., 'epoch': ..., 'arch': ...}``;
  torchvision's references: ``{'model': ..., 'model_ema': ..., 'optimizer': ...}``;
- mmengine's ``EMAHook`` SWAPS the two on saving: ``state_dict`` holds the averaged weights and
  ``ema_state_dict`` the raw ones (``module.``-prefixed, plus an ``steps`` counter);
- anything of those with extra entries beside the weights: numbers, strings, dicts, 0-d
  tensors such as ``best_miou``, ``epoch`` or ``iter``.

Rules (``unwrap``), every decision reported in the notes:

1. A mapping holding at least one tensor with a dimension is the weights dict itself. Otherwise
   its entries that hold such tensors are the candidates: EMA weights first (``state_dict_ema``,
   ``model_ema``, ``ema_state_dict``, ``ema``; mmengine's swapped layout takes ``state_dict``),
   then ``state_dict``, ``model``, ``model_state_dict``, ``net``, then the only other candidate;
   several unknown candidates are an error that lists them. ``key`` picks one by name instead.
2. Entries beside the weights (and non-tensor entries inside them) are set aside and listed.
   0-d tensors inside the weights are kept: ``num_batches_tracked`` and FarSeg's ``buffer_step``
   are real state. A 0-d tensor whose name has no dot (``best_miou``, ``epoch``) that the model
   does not know is metadata; ``is_metadata`` marks it and the planner sets it aside, reported.
3. A ``module.`` (DDP / DataParallel, also nested) or ``_orig_mod.`` (``torch.compile``) prefix
   is stripped only when every key carries it.
4. An optimizer state (torch ``{'state', 'param_groups'}``) is refused with that name.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from rsport.rules import Plan

EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")  # timm, torchvision, mmengine, generic
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")   # mmcv/timm, SimpleCV, tutorials, misc
WRAPPER_PREFIXES = ("module.", "_orig_mod.")                         # DDP / DataParallel, torch.compile
DDP_PREFIX = "module."
# paddle optimizer accumulators (``model.pdopt``): <param>_velocity_0, _moment1_0, _beta1_pow_acc_0 ...
OPTIMIZER_SUFFIX = re.compile(r"_(velocity|moment\d|beta\d_pow_acc|mean_square|mean_grad|squared|linear)_\d+$")


class CheckpointError(ValueError):
    """The file is readable but is not a state_dict we can use."""


def _ndim(value) -> int:
    return len(tuple(getattr(value, "shape", ())))


def _describe(key, value, is_tensor) -> str:
    if is_tensor(value):
        return f"{key} ({'0-d tensor' if _ndim(value) == 0 else 'tensor ' + 'x'.join(map(str, value.shape))})"
    return f"{key} ({type(value).__name__})"


def _list(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def holds_weights(obj, is_tensor: Callable[[object], bool]) -> bool:
    """A mapping with at least one tensor that has a dimension (0-d tensors alone are metadata)."""
    return isinstance(obj, Mapping) and any(is_tensor(v) and _ndim(v) > 0 for v in obj.values())


def is_metadata(name: str, shape) -> bool:
    """A 0-d entry named like a variable, not like a layer's tensor (``best_miou``, ``epoch``):
    set aside when the model has no such name."""
    return len(tuple(shape)) == 0 and "." not in str(name)


def _choose(obj: Mapping, is_tensor, key: str | None) -> tuple[object, tuple, list[str]]:
    """(the weights dict, the path of entries it came from (empty: the top level), notes)."""
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"no entry {key!r} (entries: {_list([_describe(k, v, is_tensor) for k, v in obj.items()])})")
        if not holds_weights(obj[key], is_tensor):
            raise CheckpointError(f"entry {key!r} holds no tensors ({_describe(key, obj[key], is_tensor)})")
        return obj[key], (key,), [f"took {{'{key}': ...}} as asked"]
    if holds_weights(obj, is_tensor):
        return obj, (), []
    candidates = [k for k, v in obj.items() if holds_weights(v, is_tensor)]
    if not candidates:
        nested = [k for k, v in obj.items() if isinstance(v, Mapping) and any(holds_weights(x, is_tensor)
                                                                               for x in v.values())]
        if len(nested) == 1:  # {'model': {'state_dict': ...}}: one level deeper, once
            inner, path, notes = _choose(obj[nested[0]], is_tensor, None)
            return inner, (nested[0], *path), notes
        raise CheckpointError("no tensors at the top level and no entry holding weights (top-level entries: "
                              + _list([_describe(k, v, is_tensor) for k, v in obj.items()], 8) + ")")
    ema = [k for k in EMA_KEYS if k in candidates]
    plain = [k for k in WRAPPER_KEYS if k in candidates]
    notes = []
    if "ema_state_dict" in ema and "state_dict" in plain and _mmengine_swapped(obj["ema_state_dict"]):
        chosen = "state_dict"
        notes.append("mmengine EMA checkpoint: took 'state_dict', which holds the averaged (EMA) weights "
                     "(EMAHook swaps them in on saving; 'ema_state_dict' holds the raw ones)")
    elif ema:
        chosen = ema[0]
        others = [k for k in candidates if k != chosen]
        notes.append(f"took the EMA weights {{'{chosen}': ...}}"
                     + (f" over {_list(others)} (choose another with convert's --key)" if others else ""))
    elif plain:
        chosen = plain[0]
    elif len(candidates) == 1:
        chosen = candidates[0]
        notes.append(f"took {{'{chosen}': ...}}, the only entry holding tensors")
    else:
        raise CheckpointError(f"several entries hold tensors: {_list(candidates)}; choose one "
                              f"(convert's --key NAME)")
    return obj[chosen], (chosen,), notes


def _mmengine_swapped(ema: Mapping) -> bool:
    """mmengine's AveragedModel state: ``steps`` plus ``module.``-prefixed weights."""
    keys = [str(k) for k in ema]
    return "steps" in keys and all(k.startswith(DDP_PREFIX) for k in keys if k != "steps")


def unwrap(obj, is_tensor: Callable[[object], bool], key: str | None = None) -> tuple[dict, list[str]]:
    """Return (name -> tensor, notes) from a checkpoint of any layout in the module docstring.
    ``key``: the entry that holds the weights, instead of the automatic choice."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    if not obj:
        raise CheckpointError("the checkpoint is an empty dict")
    if {"state", "param_groups"} <= set(obj):
        raise CheckpointError("this is a torch optimizer state ({'state': ..., 'param_groups': ...}), not model "
                              "weights: pass the model's file")
    weights, path, notes = _choose(obj, is_tensor, key)
    if path:
        beside, level = [], obj
        for depth, entry in enumerate(path):
            beside += [_describe(".".join(map(str, (*path[:depth], k))), v, is_tensor)
                       for k, v in level.items() if k != entry]
            level = level[entry]
        where = "".join(f"{{'{k}': " for k in path) + "..." + "}" * len(path)
        notes.insert(0, f"unwrapped {where}" + (f"; set aside: {_list(beside)}" if beside else ""))
    inner = [_describe(k, v, is_tensor) for k, v in weights.items() if not is_tensor(v)]
    if inner:
        notes.append(f"set aside {len(inner)} entries that are not tensors: {_list(inner)}")
    state = {str(k): v for k, v in weights.items() if is_tensor(v)}
    if not state:
        raise CheckpointError("the state_dict holds no tensors")
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                notes.append(f"stripped the {'DDP' if prefix == DDP_PREFIX else 'torch.compile'} prefix "
                             f"'{prefix}' from all {len(state)} keys")
                stripped = True
    return state, notes


# --- explaining failures --------------------------------------------------------------------------
def key_pattern(name: str) -> str:
    """A state_dict name with its list indices replaced (``layer1.2.conv1.weight`` ->
    ``layer1.#.conv1.weight``): variants of one model (depths, tiny vs default) share patterns."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "#", name)


def closest(source_keys: Iterable[str], models: Mapping[str, Iterable[str]]) -> list[tuple[str, float, int, int]]:
    """Registered models ranked by how well their names match ``source_keys``:
    ``(model, Jaccard index of the key patterns, shared patterns, source patterns)``, best first."""
    source = {key_pattern(k) for k in source_keys}
    ranked = []
    for name, keys in models.items():
        theirs = {key_pattern(k) for k in keys}
        shared = len(source & theirs)
        ranked.append((name, shared / max(len(source | theirs), 1), shared, len(source)))
    return sorted(ranked, key=lambda r: -r[1])


def another_model(model: str, ranked: list[tuple[str, float, int, int]]) -> str | None:
    """The registered model the keys match clearly better than ``model``, if any."""
    if not ranked:
        return None
    best, score, _, _ = ranked[0]
    own = next((r[1] for r in ranked if r[0] == model), 0.0)
    return best if best != model and score >= 0.5 and score > own + 0.2 else None


def optimizer_keys(keys) -> int:
    """How many of ``keys`` are named like paddle optimizer accumulators (``model.pdopt``)."""
    return sum(bool(OPTIMIZER_SUFFIX.search(str(k))) for k in keys)


def hints_for(plan: Plan, model: str, source_keys, ranked: list[tuple[str, float, int, int]] | None = None) -> list[str]:
    """Explanations for the common ways a conversion fails, the likeliest cause first.
    ``ranked``: ``closest`` over the registered models (the key set of each), when known."""
    hints = []
    source_keys = list(source_keys)
    unexpected = [s for s, _, _ in plan.unexpected]
    accumulators = optimizer_keys(source_keys)
    optimizer = accumulators > len(source_keys) // 2
    if optimizer:
        hints.append(f"{accumulators}/{len(source_keys)} source keys end like optimizer accumulators "
                     f"(e.g. {next(k for k in source_keys if OPTIMIZER_SUFFIX.search(k))}): this is an optimizer "
                     f"state (model.pdopt), not weights; pass the model.pdparams beside it")
    other = another_model(model, ranked or [])
    if other is not None:
        best = ranked[0]
        own = next((r for r in ranked if r[0] == model), (model, 0.0, 0, best[3]))
        hints.append(f"is this another model's checkpoint? its keys match {other} best ({best[2]}/{best[3]} key "
                     f"patterns, {own[2]} for {model}): a {other} checkpoint converts with --model {other}")
    expected = {s for _, s in plan.missing if s}
    firsts = Counter(s.split(".", 1)[0] + "." for s in unexpected if "." in s)
    for prefix, n in firsts.most_common(1):
        fits = sum(s[len(prefix):] in expected for s in unexpected if s.startswith(prefix))
        if n > 1 and fits > n // 2:
            total = sum(k.startswith(prefix) for k in source_keys)
            hints.append(f"{total}/{len(source_keys)} source keys start with '{prefix}' and {fits} of them are "
                         f"names {model} expects without it: a wrapper or prefix the converter does not strip "
                         f"(only a prefix on every key is stripped)")
    if not plan.mappings and source_keys and other is None and not optimizer:
        hints.append(f"no source tensor maps onto {model}: is this another model's checkpoint? "
                     f"source keys look like {', '.join(source_keys[:3])}")
    mapped = {m.target for m in plan.mappings}
    buffers = [t for t, s in plan.missing if s.endswith((".running_mean", ".running_var", "._mean", "._variance"))
               and t.rpartition(".")[0] + ".weight" in mapped]
    if buffers:
        hints.append(f"{len(buffers)} missing tensors are running statistics of BatchNorm layers whose weights "
                     f"are present: the source was saved without BN buffers (parameters() instead of state_dict()?)")
    return hints
