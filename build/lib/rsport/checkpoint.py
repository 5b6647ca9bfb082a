"""Framework-neutral checkpoint handling: unwrapping containers and explaining failures."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from rsport.rules import Plan

WRAPPER_KEYS = ("state_dict", "model")
DDP_PREFIX = "module."


class CheckpointError(ValueError):
    """The file is readable but is not a state_dict we can use."""


def unwrap(obj, is_tensor: Callable[[object], bool]) -> tuple[dict, list[str]]:
    """Return (name -> tensor, notes) from a plain state_dict or a ``{'model'|'state_dict': ...}``
    wrapper, stripping a DDP ``module.`` prefix only when every key carries it."""
    notes: list[str] = []
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    if obj and not any(is_tensor(v) for v in obj.values()):
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError("no tensors at the top level and no 'model' or 'state_dict' entry "
                                  f"(top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        others = [str(k) for k in obj if k != inner]
        notes.append(f"unwrapped {{'{inner}': ...}}" + (f" (ignored entries: {', '.join(others)})" if others else ""))
        obj = obj[inner]
    not_tensors = [str(k) for k, v in obj.items() if not is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{len(not_tensors)} entries are not tensors: {', '.join(not_tensors[:8])}")
    if not obj:
        raise CheckpointError("the state_dict is empty")
    state = dict(obj)
    if all(str(k).startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX):]: v for k, v in state.items()}
        notes.append(f"stripped the DDP prefix '{DDP_PREFIX}' from all {len(state)} keys")
    return state, notes


def hints_for(plan: Plan, model: str, source_keys) -> list[str]:
    """Explanations for the common ways a conversion fails."""
    hints = []
    source_keys = list(source_keys)
    unexpected = [s for s, _, _ in plan.unexpected]
    firsts = Counter(s.split(".", 1)[0] + "." for s in unexpected if "." in s)
    for prefix, n in firsts.most_common(1):
        if n > len(unexpected) // 2 and n > 1:
            total = sum(k.startswith(prefix) for k in source_keys)
            hints.append(f"{total}/{len(source_keys)} source keys start with '{prefix}': a wrapper or prefix "
                         f"the converter does not strip (only a prefix on every key is stripped)")
    if not plan.mappings and source_keys:
        hints.append(f"no source tensor maps onto {model}: is this another model's checkpoint? "
                     f"source keys look like {', '.join(source_keys[:3])}")
    mapped = {m.target for m in plan.mappings}
    buffers = [t for t, s in plan.missing if s.endswith((".running_mean", ".running_var", "._mean", "._variance"))
               and t.rpartition(".")[0] + ".weight" in mapped]
    if buffers:
        hints.append(f"{len(buffers)} missing tensors are running statistics of BatchNorm layers whose weights "
                     f"are present: the source was saved without BN buffers (parameters() instead of state_dict()?)")
    return hints
