"""Automatic taps: every submodule of both twins compared, and the first divergence named where the
bug IS, not at its consumer.

1. Pairing. Submodules pair by name (twins keep the original names); modules renamed in the port
   pair through the weight mapping (the modules owning mapped tensors), and the rest by call
   order among modules of the same kind.
2. Comparison. Both twins run once with a hook on every submodule; the first call's output of
   each torch module is compared with its paddle twin's, in the order the calls RETURN (children
   before their parent).
3. Localization. The first module whose output differs is the candidate. If its own inputs agree,
   the bug is in it (its weights, or the code of its forward: a weight-free op such as an
   attention scale or a resize is named at the module whose forward contains it). If its inputs
   already differ although every module before it agreed, the difference was made between calls,
   in an enclosing module's forward: walk up to the first ancestor whose inputs agree and name
   it, with the child whose input differs (swapped branches, concat order, a skipped call, a
   missing add).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from rsport.compare import Diff, compare

ROOT = "(root)"


def kind_of(class_name: str) -> str:
    """A class name across frameworks: Conv2d / Conv2D -> conv2d, ModuleList / LayerList -> list."""
    name = class_name.lower().replace("layerlist", "modulelist").replace("layerdict", "moduledict")
    return re.sub(r"^(.*?)(\d)d$", r"\1\2d", name)


def module_pairs(t_order: list[str], p_order: list[str], t_classes: dict, p_classes: dict, plan=None) -> dict:
    """torch submodule name -> paddle submodule name."""
    p_known = set(p_classes)
    pairs = {name: name for name in t_classes if name in p_known}
    if plan is not None:
        for m in plan.mappings:
            source, target = m.source.rpartition(".")[0], m.target.rpartition(".")[0]
            if source not in pairs and target in p_known:
                pairs[source] = target
    taken = set(pairs.values())
    left_t = [n for n in t_order if n not in pairs]
    left_p = [n for n in p_order if n not in taken]
    matcher = difflib.SequenceMatcher(None, [kind_of(t_classes[n]) for n in left_t],
                                      [kind_of(p_classes[n]) for n in left_p], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            pairs[left_t[block.a + k]] = left_p[block.b + k]
    return pairs


def _keys(taps: dict, name: str) -> list[str]:
    return [k for k in taps if k == name or (k.startswith(name + "[") and k.partition("[")[0] == name)]


def compare_modules(t_taps: dict, p_taps: dict, t_order: list[str], pairs: dict, tol) -> list[Diff]:
    """One row per torch submodule output (first call), in completion order, named by the torch
    module; a paddle twin without that output is a failed row."""
    rows = []
    for name in t_order:
        twin = pairs.get(name)
        if twin is None:
            continue
        for key in _keys(t_taps, name):
            other = twin + key[len(name):]
            if other not in p_taps:
                rows.append(Diff(key, False, float("nan"), float("nan"), float("nan"), float("nan"),
                                 f"paddle {twin} has no output {key[len(name):] or ''}".rstrip()))
                continue
            rows.append(compare(key, p_taps[other], t_taps[key], tol))
    return rows


@dataclass
class Location:
    """Where a forward divergence starts."""

    module: str               # the culprit module ("(root)": the model's own forward)
    kind: str                 # "module" (its own computation) or "wiring" (between its children's calls)
    detail: str = ""
    paddle_module: str = ""   # its twin's name

    def describe(self) -> str:
        if self.kind == "module":
            return self.module
        return f"{self.module} (wiring: {self.detail})"


def ancestors(name: str) -> list[str]:
    """Enclosing modules, nearest first, ending with the root ''."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)] + [""]


def locate(ctx, tmodel, pmodel, x, first: str, pairs: dict, t_order: list[str], p_order: list[str], tol) -> Location:
    """The culprit behind ``first`` (the first submodule whose output differs)."""
    chain = [first] + [a for a in ancestors(first) if a == "" or a in t_order]
    wanted = [n for n in chain if n]
    twins = {n: pairs[n] for n in wanted if n in pairs}
    _, _, t_inputs, _ = ctx.tb.capture(tmodel, x, [], keep=False, inputs=list(twins))
    _, _, p_inputs, _ = ctx.pb.capture(pmodel, x, [], keep=False, inputs=[twins[n] for n in twins])

    def inputs_agree(name) -> bool | None:
        if name == "":
            return True  # the model's input: the data step proves both sides are fed the same batch
        if name not in twins or name not in t_inputs or twins[name] not in p_inputs:
            return None
        t_args, p_args = t_inputs[name], p_inputs[twins[name]]
        if len(t_args) != len(p_args):
            return False
        return all(compare(name, p, t, tol).passed for t, p in zip(t_args, p_args))

    if inputs_agree(first):
        return Location(first, "module", paddle_module=pairs.get(first, ""))
    child = first
    for parent in chain[1:]:
        agree = inputs_agree(parent)
        if agree is None:
            continue
        if agree:
            name = parent or ROOT
            return Location(name, "wiring", f"the input of {child} differs although every module called before it "
                                            f"agrees and {name}'s own inputs agree: look at {name}'s forward "
                                            f"between the calls (argument or concat order, a swapped branch, a "
                                            f"skipped call, a weight-free op such as a scale, an add or a resize)",
                            pairs.get(parent, ""))
        child = parent
    return Location(ROOT, "wiring", f"the input of {child} differs", "")
