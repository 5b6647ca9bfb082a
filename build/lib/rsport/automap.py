"""Weights without a rule table: map the tensors of two models by structure, strictly.

For a pair whose parameter names do not match and for which the user gave no rules (a model
ported with different attribute names), the tensors are paired by the ORDER in which their
modules are called and by their shapes, PaDiff's "auto weights" idea, done strictly:

1. both models run the same example input; every module that owns tensors directly is listed in
   the order its first call returns (modules never called follow in declaration order);
2. each module gets a signature: its layer type and its tensors' roles and shapes in torch
   layout (a paddle Linear weight is transposed; BatchNorm ``_mean``/``_variance`` are
   ``running_mean``/``running_var``);
3. the two signature sequences are aligned; equal runs pair module by module. A module left over
   pairs only with the one left-over module of the other side that has its signature; two or more
   candidates are an ambiguity, refused with a report that lists them;
4. inside a module pair, tensors pair by role, or by shape where the role is not standard; two
   same-shaped tensors with unmatched names are refused the same way.

Every tensor is used once (checked again as a bijection by rsport.rules.make_plan). The result is
a table of exact-name rules, which ``write_rules`` saves as a Python module the user can commit and
pass back as ``rules=``.
"""
from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rsport.frameworks import adapter
from rsport.rules import COMMON_RULES, LAYER_OPS, PADDLE, TORCH, Rule, first_match

ROLES = {"running_mean": "mean", "_mean": "mean", "running_var": "var", "_variance": "var"}
STANDARD = {"weight", "bias", "mean", "var"}
TORCH_ONLY = {"num_batches_tracked"}


class AmbiguousMapping(ValueError):
    """The structure does not determine a one-to-one mapping; ``str()`` lists the candidates."""


@dataclass
class Module:
    name: str
    layer_type: str
    tensors: list  # (full name, role, shape in torch layout)

    @property
    def signature(self) -> str:
        """Layer type and the tensors' roles and shapes; a non-standard name (a parameter the port
        may have renamed) counts by its shape alone."""
        parts = sorted(f"{role if role in STANDARD else '*'}:{'x'.join(map(str, shape))}" for _, role, shape in self.tensors)
        return f"{self.layer_type}(" + ", ".join(parts) + ")"


@dataclass
class Found:
    """A structural mapping: exact-name rules (torch -> paddle) and what was decided."""

    rules: list[Rule] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # module pairs
    notes: list[str] = field(default_factory=list)


def modules_in_call_order(side: str, model, example) -> list[Module]:
    """Modules that own tensors, in the order their first call returns, then the uncalled ones."""
    fw = adapter(side)
    schema = fw.schema(model)
    _, _, _, order = fw.capture(model, example, None, keep=False)
    owned: dict[str, list] = defaultdict(list)
    types: dict[str, str] = {}
    for name, tensor in schema.items():
        path, _, leaf = name.rpartition(".")
        if leaf in TORCH_ONLY:
            continue
        shape = tuple(tensor.shape)
        if side == PADDLE and LAYER_OPS.get((tensor.layer_type, tensor.leaf)) == "transpose":
            shape = shape[::-1]
        owned[path].append((name, ROLES.get(leaf, leaf), shape))
        types[path] = tensor.layer_type
    ranked = [n for n in order if n in owned] + [n for n in owned if n not in order and n]
    ranked += [""] if "" in owned else []  # the root's own tensors come last (it returns last)
    return [Module(n, types[n], owned[n]) for n in ranked]


def _pair_tensors(tm: Module, pm: Module) -> tuple[list[tuple[str, str]], list[str]]:
    """Tensor pairs inside one module pair, by role, then by shape among non-standard names."""
    pairs, problems = [], []
    left = list(pm.tensors)
    for tname, role, shape in tm.tensors:
        same_role = [t for t in left if t[1] == role and t[2] == shape]
        by_shape = [t for t in left if t[2] == shape and t[1] not in ROLES.values()]
        chosen = same_role if same_role else (by_shape if role not in ROLES.values() else [])
        if len(chosen) != 1:
            what = "no" if not chosen else f"{len(chosen)} candidates:"
            problems.append(f"{tname} {list(shape)}: {what} " + ", ".join(t[0] for t in chosen)
                            + f" in {pm.name or '(root)'}")
            continue
        pairs.append((tname, chosen[0][0]))
        left.remove(chosen[0])
    return pairs, problems


def structural_rules(torch_model, paddle_model, example) -> Found:
    """Exact-name rules mapping every torch tensor onto the paddle model by structure; raises
    AmbiguousMapping with the candidates when the structure does not decide."""
    tmods = modules_in_call_order(TORCH, torch_model, example)
    pmods = modules_in_call_order(PADDLE, paddle_model, example)
    matcher = difflib.SequenceMatcher(None, [m.signature for m in tmods], [m.signature for m in pmods],
                                      autojunk=False)
    found, problems = Found(), []
    left_t, left_p = [], []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            found.pairs += [(tmods[i].name, pmods[j].name) for i, j in zip(range(i1, i2), range(j1, j2))]
        else:
            left_t += tmods[i1:i2]
            left_p += pmods[j1:j2]
    for tm in left_t:  # out-of-order leftovers: only a unique signature match is accepted
        candidates = [pm for pm in left_p if pm.signature == tm.signature]
        if len(candidates) == 1:
            found.pairs.append((tm.name, candidates[0].name))
            found.notes.append(f"paired {tm.name} with {candidates[0].name} out of call order (unique signature)")
            left_p.remove(candidates[0])
        elif candidates:
            problems.append(f"{tm.name} {tm.signature}: {len(candidates)} candidates: "
                            + ", ".join(pm.name for pm in candidates))
        else:
            problems.append(f"{tm.name} {tm.signature}: no paddle module with this signature")
    problems += [f"paddle {pm.name} {pm.signature}: no torch module left for it" for pm in left_p
                 if pm.name not in {p for _, p in found.pairs}]
    by_name_t, by_name_p = {m.name: m for m in tmods}, {m.name: m for m in pmods}
    tensor_pairs = []
    for tname, pname in found.pairs:
        pairs, issues = _pair_tensors(by_name_t[tname], by_name_p[pname])
        tensor_pairs += pairs
        problems += issues
    if problems:
        raise AmbiguousMapping(f"the structure does not determine the weight mapping ({len(problems)} problems):\n"
                               + "\n".join(f"  {p}" for p in problems[:20])
                               + ("\n  ..." if len(problems) > 20 else "")
                               + "\ngive rules=... for these tensors (rsport.rules.Rule) and try again")
    for i, (tname, pname) in enumerate(tensor_pairs):
        rule, groups = first_match(COMMON_RULES, tname, TORCH)
        if rule is not None and rule.render(groups, PADDLE) == pname:
            continue  # the common rules already say so
        found.rules.append(Rule(f"auto_{i}", tname, pname))
    return found


def write_rules(found: Found, path: str | Path, title: str = "") -> Path:
    """Save a structural mapping as a Python module holding ``RULES`` (commit it; pass it back as
    ``rules=`` or as a spec's ``rules``)."""
    path = Path(path)
    lines = [f'"""Rename rules found by rsport.automap{": " + title if title else ""} (torch name -> paddle name).',
             "", "Exact names, checked as a one-to-one mapping; the common BatchNorm rules are added after them.",
             '"""', "from rsport.rules import Rule", "", "RULES = ("]
    lines += [f"    Rule({r.name!r}, {r.torch!r}, {r.paddle!r})," for r in found.rules]
    lines += [")", ""]
    path.write_text("\n".join(lines))
    return path
