"""Rename rules as data, and the checked bijection that applies them in either direction.

A rule pairs a torch-side template with a paddle-side template. ``{p}`` matches a dotted path,
``{k:int}`` an integer; every template is anchored (full match). Rules are tried in order and
the first match wins, the same way torch->paddle and paddle->torch, so one table serves both
converters. ``paddle=None`` means the tensor has no paddle counterpart: it is dropped going to
paddle and recreated (``fill``) coming back.

Value operations are decided by the TARGET layer's type (``LAYER_OPS``), never by a name: a
Linear weight is stored [out, in] in torch and [in, out] in paddle, whatever the layer is called.
A rule may also carry a value operation of its own (``Rule.op``, e.g. ``Reorder``: a channel
permutation between two layouts of the same tensor), applied from its ``torch`` side to its
``paddle`` side and inverted the other way, exactly (a gather: round trips are bit-exact).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

TORCH, PADDLE = "torch", "paddle"
SIDES = (TORCH, PADDLE)

_PLACEHOLDER = re.compile(r"\{(\w+)(?::(int))?\}")


@dataclass(frozen=True)
class Reorder:
    """Value operation: permute axis ``axis`` of length ``groups`` x C between two layouts.

    The rule's ``torch`` side stores it group-major (index g * C + c, e.g. the original Swin
    PatchMerging's concat of 4 sub-grids); its ``paddle`` side channel-major (index c * groups + p,
    e.g. mmseg 1.x's ``nn.Unfold``), where position p holds group ``perm[p]``."""

    axis: int
    groups: int
    perm: tuple[int, ...]

    def __post_init__(self):
        if sorted(self.perm) != list(range(self.groups)):
            raise ValueError(f"reorder: {self.perm} is not a permutation of {self.groups} groups")

    def index(self, length: int) -> np.ndarray:
        """``out[j] = in[index[j]]`` along the axis, from the torch side to the paddle side."""
        if length % self.groups:
            raise ValueError(f"reorder: axis of length {length} is not {self.groups} groups")
        channel, position = np.divmod(np.arange(length), self.groups)
        return np.asarray(self.perm)[position] * (length // self.groups) + channel

    def apply(self, value: np.ndarray) -> np.ndarray:
        """torch side -> paddle side."""
        return np.take(value, self.index(value.shape[self.axis]), axis=self.axis)

    def invert(self, value: np.ndarray) -> np.ndarray:
        """paddle side -> torch side."""
        return np.take(value, np.argsort(self.index(value.shape[self.axis])), axis=self.axis)


@dataclass(frozen=True)
class Rule:
    """One rename rule. ``offsets`` maps an int placeholder to (paddle value - torch value);
    ``op`` is an optional value operation of the rule itself (torch side -> paddle side)."""

    name: str
    torch: str
    paddle: str | None
    offsets: tuple[tuple[str, int], ...] = ()
    fill: str | None = None
    op: Reorder | None = None

    def __post_init__(self):
        if self.paddle is None and self.fill is None:
            raise ValueError(f"rule {self.name}: a torch-only tensor needs a fill to be recreated")
        if self.paddle is not None and _fields(self.torch) != _fields(self.paddle):
            raise ValueError(f"rule {self.name}: templates use different placeholders")

    def template(self, side: str) -> str | None:
        return self.torch if side == TORCH else self.paddle

    @cached_property
    def _patterns(self) -> dict[str, re.Pattern | None]:
        return {side: _compile(self.template(side)) for side in SIDES}

    def match(self, key: str, side: str) -> dict[str, str] | None:
        pattern = self._patterns[side]
        found = pattern.fullmatch(key) if pattern is not None else None
        return found.groupdict() if found else None

    def render(self, groups: Mapping[str, str], side: str) -> str | None:
        """Render ``side``'s name from placeholder values matched on the other side."""
        template = self.template(side)
        if template is None:
            return None
        sign = 1 if side == PADDLE else -1
        offsets = dict(self.offsets)

        def value(m: re.Match) -> str:
            name, kind = m.group(1), m.group(2)
            return str(int(groups[name]) + sign * offsets.get(name, 0)) if kind else groups[name]

        return _PLACEHOLDER.sub(value, template)


def _fields(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template)}


def _compile(template: str | None) -> re.Pattern | None:
    """Anchored regex of a template; a placeholder used twice must match the same text twice
    (PaddleSeg repeats indices: ``st{s}.stage_st{s}_{m:int}...``)."""
    if template is None:
        return None
    parts, pos, seen = [], 0, set()
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        if m.group(1) in seen:
            parts.append(f"(?P={m.group(1)})")
        else:
            parts.append(f"(?P<{m.group(1)}>\\d+)" if m.group(2) else f"(?P<{m.group(1)}>.+)")
        seen.add(m.group(1))
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


# Shared by every model: BatchNorm buffers, torch's step counter, then names kept as they are
# (attribute names are weight names in both trees). Per-model tables go in front of these.
COMMON_RULES: tuple[Rule, ...] = (
    Rule("bn_running_mean", "{p}.running_mean", "{p}._mean"),
    Rule("bn_running_var", "{p}.running_var", "{p}._variance"),
    Rule("bn_num_batches_tracked", "{p}.num_batches_tracked", None, fill="zeros_int64"),
    Rule("same_name", "{p}", "{p}"),
)

# (target layer type, parameter leaf name) -> value operation, both directions.
LAYER_OPS: dict[tuple[str, str], str] = {("Linear", "weight"): "transpose"}

FILLS = {"zeros_int64": lambda shape: np.zeros(shape, dtype=np.int64),
         "zeros_float32": lambda shape: np.zeros(shape, dtype=np.float32)}


@dataclass(frozen=True)
class Fold:
    """A foreign conv bias that feeds a BatchNorm, absorbed into that BatchNorm's running mean
    (``mean - bias``): the same function in eval, and in training too, where the batch mean
    cancels any constant per-channel shift (the running mean then stays offset by the same
    bias). Both templates are FOREIGN names; the bias is consumed. Going back to the foreign
    naming, the bias is created as zeros and the mean kept."""

    bias: str
    mean: str


@dataclass(frozen=True)
class Naming:
    """Another implementation's naming of the same framework's weights (e.g. PaddleRS), mapped
    onto ours before conversion. In each rule, ``torch`` is OUR (native) name template and
    ``paddle`` the foreign one (for a torch-side naming both are torch names); ``paddle=None``
    marks a tensor the foreign naming lacks, created from ``fill``. ``ignore``: anchored regexes
    of foreign tensors we have no use for. ``folds``: foreign conv biases absorbed into the
    following BatchNorm (``Fold``). ``note``: what a user should know about that source, reported
    whenever the naming is applied."""

    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()  # substrings that identify this naming in a checkpoint
    folds: tuple[Fold, ...] = ()
    note: str = ""


def _fold_biases(arrays: Mapping[str, np.ndarray], folds: Iterable[Fold]) -> tuple[dict, list[str]]:
    """Absorb each fold's bias into its running mean (foreign names); returns arrays and the folded biases."""
    out, folded = dict(arrays), []
    for fold in folds:
        pattern = _compile(fold.bias)
        for key in [k for k in out if pattern.fullmatch(k)]:
            groups = pattern.fullmatch(key).groupdict()
            mean = _PLACEHOLDER.sub(lambda m: groups[m.group(1)], fold.mean)
            if mean not in out:
                raise ValueError(f"fold: {key} has no BatchNorm running mean {mean} to absorb it")
            bias = out.pop(key)
            out[mean] = (out[mean] - bias).astype(out[mean].dtype)
            folded.append(key)
    return out, folded


def apply_naming(arrays: Mapping[str, np.ndarray], naming: Naming) -> tuple[dict, list[str]]:
    """Rename foreign keys to native ones (first matching rule; unmatched keys stay), drop the
    ignored ones and create the missing ones; returns the arrays and a note per change kind."""
    patterns = [re.compile(p) for p in naming.ignore]
    arrays, folded = _fold_biases(arrays, naming.folds)
    out, renamed, dropped = {}, 0, []
    for key, value in arrays.items():
        if any(p.fullmatch(key) for p in patterns):
            dropped.append(key)
            continue
        rule, groups = first_match([r for r in naming.rules if r.paddle is not None], key, PADDLE)
        name = rule.render(groups, TORCH) if rule else key
        renamed += name != key
        out[name] = rule.op.invert(value) if rule is not None and rule.op is not None else value
    created = [r.torch for r in naming.rules if r.paddle is None and r.torch not in out]
    for name in created:
        out[name] = FILLS[next(r.fill for r in naming.rules if r.torch == name)](())
    reordered = sum(1 for key in arrays if _op_rule(naming, key, PADDLE) is not None)
    notes = [f"renamed {renamed} keys to the native naming"]
    if reordered:
        notes.append(f"reordered the channels of {reordered} tensors ({', '.join(sorted(_op_names(naming)))})")
    if dropped:
        notes.append(f"ignored {len(dropped)} tensors the model does not have: {', '.join(dropped[:4])}")
    if created:
        notes.append(f"created {', '.join(created)} (absent in that naming) with its default value")
    if folded:
        notes.append(f"folded {len(folded)} conv biases into the running mean of the BatchNorm that follows "
                     f"(mean - bias; the same function): {', '.join(folded[:4])}")
    if naming.note:
        notes.insert(0, naming.note)
    return out, notes


def _op_rule(naming: Naming, key: str, side: str) -> Rule | None:
    rule, _ = first_match([r for r in naming.rules if r.paddle is not None], key, side)
    return rule if rule is not None and rule.op is not None else None


def _op_names(naming: Naming) -> set[str]:
    return {r.name for r in naming.rules if r.op is not None}


def export_naming(arrays: Mapping[str, np.ndarray], naming: Naming) -> dict:
    """The inverse of ``apply_naming``: native keys and values in the foreign naming (first matching
    rule; unmatched keys stay; tensors the foreign naming lacks are dropped); the biases of its
    ``folds`` are created as zeros next to the running means they were folded into."""
    out = {}
    for key, value in arrays.items():
        rule, groups = first_match(naming.rules, key, TORCH)
        if rule is None:
            out[key] = value
        elif rule.paddle is not None:
            out[rule.render(groups, PADDLE)] = rule.op.apply(value) if rule.op is not None else value
    for fold in naming.folds:
        pattern = _compile(fold.mean)
        for key in [k for k in out if pattern.fullmatch(k)]:
            groups = pattern.fullmatch(key).groupdict()
            out[_PLACEHOLDER.sub(lambda m: groups[m.group(1)], fold.bias)] = np.zeros_like(out[key])
    return out


@dataclass(frozen=True)
class TensorSpec:
    """What a target model expects for one state_dict entry."""

    shape: tuple[int, ...]
    dtype: str
    layer_type: str  # framework-neutral: Conv, BatchNorm, Linear, LayerNorm, Embedding, Other
    leaf: str        # the attribute name on its layer: weight, bias, _mean, running_var, ...
    kind: str = "param"  # "param" (a framework parameter) or "buffer"


@dataclass
class Mapping_:
    source: str
    target: str
    rule: str
    op: str | None


@dataclass
class Plan:
    """The complete, checked source->target correspondence, or the list of what is wrong."""

    direction: str
    n_source: int
    n_target: int
    mappings: list[Mapping_] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)          # (source, rule)
    recreated: list[tuple[str, str]] = field(default_factory=list)        # (target, rule)
    ignored: list[tuple[str, str]] = field(default_factory=list)          # (source, pattern)
    missing: list[tuple[str, str]] = field(default_factory=list)          # (target, expected source)
    unexpected: list[tuple[str, str, str]] = field(default_factory=list)  # (source, rendered, rule)
    mismatched: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.conflicts)

    def counts(self) -> dict[str, int]:
        return {"source": self.n_source, "target": self.n_target, "mapped": len(self.mappings),
                "dropped": len(self.dropped), "recreated": len(self.recreated),
                "ignored": len(self.ignored), "missing": len(self.missing),
                "unexpected": len(self.unexpected), "mismatched": len(self.mismatched),
                "conflicts": len(self.conflicts)}

    def rules_used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for rule in [m.rule for m in self.mappings] + [r for _, r in self.dropped + self.recreated]:
            used[rule] = used.get(rule, 0) + 1
        return used


def first_match(rules: Iterable[Rule], key: str, side: str) -> tuple[Rule, dict] | tuple[None, None]:
    for rule in rules:
        groups = rule.match(key, side)
        if groups is not None:
            return rule, groups
    return None, None


def _apply_op_shape(op: str | None, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if op is None:
        return shape
    if op == "transpose":
        return shape[::-1] if len(shape) == 2 else None
    raise ValueError(f"unknown value operation {op!r}")


def make_plan(source: Mapping[str, tuple[tuple[int, ...], str]], target: Mapping[str, TensorSpec],
              rules: Iterable[Rule], source_side: str,
              ignore: Iterable[str] = ()) -> Plan:
    """Map every source tensor (name -> (shape, dtype)) onto the target schema, checking that
    the correspondence is a bijection with matching shapes and dtypes."""
    rules = tuple(rules)
    target_side = PADDLE if source_side == TORCH else TORCH
    ignore_patterns = [re.compile(p) for p in ignore]
    plan = Plan(f"{source_side}->{target_side}", len(source), len(target))
    filled: dict[str, list[str]] = {}
    for key, (shape, dtype) in source.items():
        pattern = next((p.pattern for p in ignore_patterns if p.fullmatch(key)), None)
        if pattern is not None:
            plan.ignored.append((key, pattern))
            continue
        rule, groups = first_match(rules, key, source_side)
        if rule is None:
            plan.unexpected.append((key, "", "(no rule)"))
            continue
        name = rule.render(groups, target_side)
        if name is None:
            plan.dropped.append((key, rule.name))
            continue
        spec = target.get(name)
        if spec is None:
            plan.unexpected.append((key, name, rule.name))
            continue
        filled.setdefault(name, []).append(key)
        op = LAYER_OPS.get((spec.layer_type, spec.leaf))
        converted = _apply_op_shape(op, tuple(shape))
        if converted != tuple(spec.shape) or dtype != spec.dtype:
            plan.mismatched.append((key, name, f"{tuple(shape)} {dtype}",
                                    f"{tuple(spec.shape)} {spec.dtype}", rule.name + (f" +{op}" if op else "")))
            continue
        plan.mappings.append(Mapping_(key, name, rule.name, op))
    plan.conflicts = [(name, keys) for name, keys in filled.items() if len(keys) > 1]
    conflicted = {name for name, _ in plan.conflicts}
    plan.mappings = [m for m in plan.mappings if m.target not in conflicted]
    for name in target:
        if name in filled:
            continue
        rule, groups = first_match(rules, name, target_side)
        if rule is not None and rule.template(source_side) is None:
            plan.recreated.append((name, rule.name))
        else:
            plan.missing.append((name, rule.render(groups, source_side) if rule else ""))
    return plan


def apply_plan(plan: Plan, arrays: Mapping[str, np.ndarray], target: Mapping[str, TensorSpec],
               rules: Iterable[Rule], restore: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Build the target state dict (in target order) from a checked plan. Recreated tensors take
    their value from ``restore`` when given (e.g. a manifest kept them), else the rule's fill."""
    if not plan.ok:
        raise ValueError("refusing to apply a plan with problems")
    rules = tuple(rules)
    fills = {rule.name: rule.fill for rule in rules}
    value_ops = {rule.name: rule.op for rule in rules if rule.op is not None}
    to_paddle = plan.direction.startswith(TORCH)
    out: dict[str, np.ndarray] = {}
    by_target = {m.target: m for m in plan.mappings}
    recreated = dict(plan.recreated)
    for name, spec in target.items():
        if name in by_target:
            m = by_target[name]
            value = np.asarray(arrays[m.source])
            rule_op = value_ops.get(m.rule)
            if rule_op is not None and to_paddle:  # the rule's op works in the torch layout
                value = rule_op.apply(value)
            value = np.asarray(value.T, order="C") if m.op == "transpose" else value
            out[name] = rule_op.invert(value) if rule_op is not None and not to_paddle else value
        elif restore is not None and name in restore:
            out[name] = np.asarray(restore[name], dtype=spec.dtype).reshape(spec.shape)
        else:
            out[name] = FILLS[fills[recreated[name]]](spec.shape)
    return out


def format_report(plan: Plan, title: str, hints: Iterable[str] = (), limit: int = 12, lead: str = "") -> str:
    """Grouped, human-readable account of a failed plan; ``lead`` ends the first line (the likely cause)."""
    c = plan.counts()
    lines = [f"{title}: {c['missing']} missing, {c['unexpected']} unexpected, "
             f"{c['mismatched']} shape/dtype mismatches, {c['conflicts']} conflicts "
             f"({c['source']} source tensors, {c['target']} target tensors, {c['mapped']} mapped)"
             + (f"; {lead}" if lead else "")]

    def group(header: str, rows: list[str]) -> None:
        if not rows:
            return
        lines.append(f"  {header} [{len(rows)}]:")
        lines.extend(f"    {row}" for row in rows[:limit])
        if len(rows) > limit:
            lines.append(f"    ... and {len(rows) - limit} more")

    group("missing (target needs, source lacks)",
          [f"{t}  <- expected source {s or '?'}" for t, s in plan.missing])
    group("unexpected (source has, target lacks)",
          [f"{s}  -> {t or '(no rule matched)'}  [rule {r}]" for s, t, r in plan.unexpected])
    group("shape/dtype mismatches",
          [f"{s} -> {t}: source {a}, target {b}  [rule {r}]" for s, t, a, b, r in plan.mismatched])
    group("conflicts (one target filled twice)", [f"{t} <- {', '.join(s)}" for t, s in plan.conflicts])
    group("ignored by the spec's ignore patterns", [f"{s}  [{p}]" for s, p in plan.ignored])
    hints = list(hints)
    if hints:
        lines.append("  notes and hints:")
        lines.extend(f"    {h}" for h in hints)
    return "\n".join(lines)
