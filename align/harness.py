"""Alignment harness core: one Context per (model, dtype), fixtures, results, comparisons.

Every step module (align/data.py ... align/train.py) has the same shape: ``STEP`` and
``run(ctx) -> StepResult``. The context owns what steps share: the two twins with identical
weights, the seeded ``.npy`` fixtures (created once, then reused), cached passes, and the
writers of reprod_log-format results and ``<step>_diff.log`` files. Verdicts come from
rsport.compare, never from reprod_log (which passes NaN and judges by the mean).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from rsport import tolerances
from rsport.compare import Diff, compare
from rsport.fixtures import image_batch, label_batch
from rsport.registry import ModelSpec
from rsport.rules import PADDLE, TORCH

STEPS = ("data", "forward", "metric", "loss", "backward", "optimizer", "train")
DTYPES = ("float32", "float64")
FIXTURE_SEED = 2024
# K iterations of the train step, on fixed distinct batches: two, the reproduction guide's minimum.
# From the third on, training's own chaos dominates float64 (upernet_r50: torch alone moves loss_3
# by 4.9e-9 after a 1e-15 relative weight perturbation), so no port could meet 1e-10 there.
TRAIN_ITERS = 2
OPTIMIZER_STEPS = 3         # k steps of the optimizer step
# Global gradient norm of each optimizer-step fixture, in units of the recipe's clip norm: the
# first and last steps are clipped, the middle one is not.
OPTIMIZER_NORMS = (2.0, 0.5, 1.5)
MAX_RESULT_BYTES = 64 << 20  # larger result sets are saved as per-tensor summaries

# Which tolerance profile judges which kind of value, per dtype (None for "output": the spec's
# own profile). float64 is strict; float32 profiles are calibrated on measured noise
# (rsport/tolerances.py). The state after K training iterations is judged in float64 only:
# in float32 the training dynamics amplify noise past any meaningful bound.
KIND_PROFILES = {
    "float32": {"output": None, "tap": "fp32_logit", "train_output": "fp32_train_logit", "loss": "fp32_loss",
                "grad": "fp32_grad", "param": "fp32_param", "curve": "fp32_curve", "state": None,
                "exact": "exact", "metric": "metric"},
    "float64": {"output": "fp64", "tap": "fp64", "train_output": "fp64", "loss": "fp64", "grad": "fp64",
                "param": "fp64", "curve": "fp64", "state": "fp64_state", "exact": "exact",
                "metric": "metric"},
}


@dataclass
class StepResult:
    step: str
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    first_divergence: str | None = None
    rows: list[Diff] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None
    error: str | None = None

    @classmethod
    def from_rows(cls, step: str, rows: list[Diff], first_divergence: str | None = None, note: str | None = None):
        finite = [r for r in rows if r.problem is None]
        failed = [r for r in rows if not r.passed]
        return cls(step, not failed,
                   max((r.max_abs for r in finite), default=0.0), max((r.max_rel for r in finite), default=0.0),
                   first_divergence or (failed[0].name if failed else None), rows, note=note)

    def summary(self) -> dict:
        return {"passed": self.passed, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "first_divergence": self.first_divergence, "seconds": round(self.seconds, 2),
                "note": self.note, "error": self.error}


def compare_all(actual: dict, expected: dict, tol, matching_nan_ok: bool = False) -> list[Diff]:
    """Compare two named result sets: same keys first (each missing/extra key is a failed row),
    then every value. ``tol`` is one Tolerance or a function key -> Tolerance."""
    rows = []
    for key in expected:
        if key not in actual:
            rows.append(Diff(key, False, float("nan"), float("nan"), float("nan"), float("nan"), "missing in paddle"))
            continue
        profile = tol(key) if callable(tol) else tol
        rows.append(compare(key, np.asarray(actual[key]), np.asarray(expected[key]), profile, matching_nan_ok))
    rows += [Diff(key, False, float("nan"), float("nan"), float("nan"), float("nan"), "missing in torch")
             for key in actual if key not in expected]
    return rows


_STATES: dict = {}  # torch reference states, shared by the dtypes of one run


class Context:
    """Everything the steps of one (model, dtype) share.

    Args:
        spec: the model.
        dtype: "float32" or "float64"; models, fixtures and comparisons all use it.
        out: the harness output folder (results under ``out/<model>/<dtype>/``, fixtures under
            ``out/fixtures/<model>/<dtype>/``).
        variant: "default" (the spec's align_input) or "tiny" (tests).
        torch_ckpt: a torch checkpoint instead of the embedded seeded reference.
        mutate_paddle: called on every freshly built and loaded paddle model (tests inject
            porting bugs with it).
    """

    def __init__(self, spec: ModelSpec, dtype: str, out: Path, variant: str = "default",
                 torch_ckpt: Path | None = None, mutate_paddle=None):
        from convert.core import backend

        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        self.spec, self.dtype, self.variant = spec, dtype, variant
        self.out = Path(out)
        self.dir = self.out / spec.name / dtype
        self.fixture_dir = self.out / "fixtures" / spec.name / dtype
        self.torch_ckpt = torch_ckpt
        self.mutate_paddle = mutate_paddle
        self.tb, self.pb = backend(TORCH), backend(PADDLE)
        self.cache: dict = {}

    # --- tolerances -------------------------------------------------------------------------
    def profile(self, kind: str):
        """The Tolerance for a kind of value, or None where this dtype does not judge it."""
        name = self.spec.profile_overrides.get((self.dtype, kind), KIND_PROFILES[self.dtype][kind])
        if kind == "output" and name is None:
            name = self.spec.tolerance
        return tolerances.get(name) if name else None

    # --- weights and models -----------------------------------------------------------------
    @cached_property
    def torch_state(self) -> dict:
        """The torch weights as numpy (float32 as stored), shared by every dtype of a run."""
        key = (self.spec.name, self.variant, str(self.torch_ckpt), repr(self.spec.model_kwargs(self.variant)))
        if key not in _STATES:
            if self.torch_ckpt is not None:
                from convert.core import read_source

                _STATES[key] = read_source(Path(self.torch_ckpt), TORCH)[0]
            else:
                from torch_ref.reference_weights import build_reference

                _STATES[key] = self.tb.state_arrays(build_reference(self.spec, self.variant))
        return _STATES[key]

    @cached_property
    def _twins(self):
        """The two models, built once per context (building the paddle twin takes seconds), with
        both states converted to the context's dtype for the resets in ``models()``."""
        from convert.core import translate

        tmodel, pmodel = self.tb.build(self.spec, self.variant), self.pb.build(self.spec, self.variant)
        self.paddle_schema = self.pb.schema(pmodel)
        paddle_state = translate(self.spec, self.torch_state, TORCH, pmodel)
        states = tuple({k: v.astype(self.dtype) if v.dtype.kind == "f" else v for k, v in state.items()}
                       for state in (self.torch_state, paddle_state))
        return self.tb.cast(tmodel, self.dtype), self.pb.cast(pmodel, self.dtype), states

    def models(self):
        """The twins in eval mode, reset to the identical starting weights and statistics."""
        tmodel, pmodel, (torch_state, paddle_state) = self._twins
        self.tb.load_state(tmodel, torch_state)
        self.pb.load_state(pmodel, paddle_state)
        if self.mutate_paddle is not None:
            self.mutate_paddle(pmodel)
        tmodel.eval()
        pmodel.eval()
        return tmodel, pmodel

    def call_order(self) -> list[str]:
        """Submodule names in the order the torch twin first calls them (eval, batch 0)."""
        if "order" not in self.cache:
            tmodel, _ = self.models()
            _, called = self.tb.capture(tmodel, self.spec, self.batch(0)[0], None, keep=False)
            self.cache["order"] = list(dict.fromkeys(name.partition("[")[0] for name in called))
        return self.cache["order"]

    def loss_fns(self):
        return self.tb.build_loss(self.spec), self.pb.build_loss(self.spec)

    def to_paddle_names(self, arrays: dict) -> dict:
        """Torch-named results (gradients, parameters, states) in paddle naming and layout, through
        the conversion table: the target set is what the paddle schema has for these names."""
        from rsport.rules import LAYER_OPS, TensorSpec, apply_plan, first_match, format_report, make_plan

        self._twins  # noqa: B018 - builds the models and records the paddle schema
        rules = self.spec.all_rules()
        schema = {}
        for key, value in arrays.items():
            rule, groups = first_match(rules, key, TORCH)
            name = rule.render(groups, PADDLE) if rule else None
            if name in self.paddle_schema:
                spec = self.paddle_schema[name]
                shape = np.shape(value)[::-1] if LAYER_OPS.get((spec.layer_type, spec.leaf)) else np.shape(value)
                schema[name] = TensorSpec(tuple(shape), str(np.asarray(value).dtype), spec.layer_type, spec.leaf)
        plan = make_plan({k: (np.shape(v), str(np.asarray(v).dtype)) for k, v in arrays.items()}, schema, rules,
                         TORCH, ignore=[r"(.*\.)?num_batches_tracked"])
        if not plan.ok:
            raise ValueError(format_report(plan, "torch results do not map onto paddle names"))
        return apply_plan(plan, arrays, schema, rules)

    # --- fixtures ---------------------------------------------------------------------------
    def fixture(self, name: str, make) -> np.ndarray:
        """Load ``<fixture_dir>/<name>.npy`` or create it with ``make()`` (seeded) and save it."""
        path = self.fixture_dir / f"{name}.npy"
        if path.is_file():
            return np.load(path)
        value = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, value)
        tmp.replace(path)
        return value

    def batch(self, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Seeded image and label batch ``index`` at the alignment size."""
        shape = self.spec.align_shape(self.variant)
        tag = "x".join(map(str, shape))
        image = self.fixture(f"image{index}_{tag}",
                             lambda: image_batch(self.spec, shape, FIXTURE_SEED + index, self.dtype))
        label = self.fixture(f"label{index}_{tag}",
                             lambda: label_batch(self.spec, (shape[0], *shape[2:]), FIXTURE_SEED + 100 + index))
        return image, label

    # --- results ----------------------------------------------------------------------------
    def save_results(self, step: str, torch_values: dict, paddle_values: dict) -> None:
        """Each side's results as a reprod_log ReprodLogger file (a pickled dict of arrays).
        Results of a whole model's size (gradients, parameters after k steps: ~270 MB per side
        in float64) are kept as per-tensor summaries ``<name>/summary`` = [L2 norm, max |x|,
        mean]; the verdict always uses the full arrays."""
        from reprod_log import ReprodLogger

        self.dir.mkdir(parents=True, exist_ok=True)
        for side, values in ((TORCH, torch_values), (PADDLE, paddle_values)):
            summarize = sum(np.asarray(v).nbytes for v in values.values()) > MAX_RESULT_BYTES
            logger = ReprodLogger()
            for key, value in values.items():
                value = np.asarray(value)
                if summarize and value.size > 1:
                    flat = value.astype(np.float64).ravel()
                    logger.add(f"{key}/summary", np.array([np.linalg.norm(flat), np.abs(flat).max(), flat.mean()]))
                else:
                    logger.add(key, value)
            logger.save(str(self.dir / f"{step}_{side}.npy"))

    def write_diff_log(self, result: StepResult) -> None:
        """``<step>_diff.log`` in reprod_log's layout, with our verdict (max-abs/max-rel)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = []
        for row in result.rows:
            lines.append(f"[{stamp}] root INFO: {row.name}: ")
            detail = row.problem or f"max_rel {row.max_rel:.3e}, bound {row.bound:.1e}"
            lines.append(f"[{stamp}] root INFO: \tmax diff: check passed: {row.passed}, value: {row.max_abs} ({detail})")
        if result.error:
            lines.append(f"[{stamp}] root INFO: error: {result.error}")
        lines.append(f"[{stamp}] root INFO: diff check {'passed' if result.passed else 'failed'}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{result.step}_diff.log").write_text("\n".join(lines) + "\n")


def first_in_order(rows: list[Diff], order: list[str]) -> str | None:
    """The failing row whose name comes first in ``order`` (names or their prefixes)."""
    rank = {name: i for i, name in enumerate(order)}

    def position(row: Diff) -> int:
        name = row.name
        while name and name not in rank:
            name = name.rpartition(".")[0]
        return rank.get(name, len(rank))

    failed = [r for r in rows if not r.passed]
    return min(failed, key=position).name if failed else None
