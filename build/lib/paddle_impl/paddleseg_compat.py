"""paddleseg 2.8.0 with this repository on paddle 3.3.1: three fixes and the model registration.

Fixes (``apply()``), each measured broken as shipped (../shared/reference/alignment.md) and each
kept by a test that FAILS once upstream behaves differently (tests/test_paddleseg_compat.py),
so a fixed or changed paddleseg release tells us to drop or re-measure the patch:

1. ``paddleseg.models.losses.CrossEntropyLoss`` (cross_entropy_loss.py:127/133): ``label * mask``
   and ``mask * coef`` multiply int64 by float32, which paddle 3's type promotion rejects
   (``TypeError: (InvalidType) Type promotion only support calculations between floating-point
   numbers``). Fixed copy of ``_post_process_loss`` with the two casts; nothing else changed.
2. ``paddleseg.core.train`` (train.py:273): ``avg_loss_list = [l[0] / log_iters ...]`` indexes the
   numpy value of each loss, which paddle 3 returns 0-D (``IndexError: too many indices``).
   Fix: ``loss_computation`` (the module-level function train() calls) returns each loss
   reshaped to ``[1]``, as paddle 2 produced them; train() is left untouched.
3. ``paddleseg.utils.metrics.calculate_area`` concatenates per-class 0-D sums, which paddle 3
   rejects (``ValueError: (InvalidArgument) The axis is expected to be in range of [0, 0)``).
   Fixed copy that stacks them (``core.val.evaluate`` calls it through the module, so it is fixed
   too).

Registration (``register_models()``): every registered model's paddle twin and loss are added to
``paddleseg.cvlibs.manager.MODELS`` / ``LOSSES`` under their class names, so a PaddleSeg YAML can
say ``model: {type: FactSeg, num_classes: 16}`` and ``loss: {types: [{type: JointLoss}], coef: [1]}``.
The registered model class is a thin subclass of the twin for PaddleSeg's conventions: in eval it
returns ``[prob]`` (paddleseg's val/infer take ``logits[0]`` of a list; argmax of probabilities =
argmax of logits), in train its ``loss_computation`` hook applies the YAML's first loss to ALL
train outputs at once. paddleseg's own losses cannot express these models' losses (FactSeg's joint
foreground/binary NLL with small-object mining, FarSeg's annealing focal loss, the mmseg
decode + 0.4 aux CE on two outputs), which is why ours are registered.

Fixed copies of upstream functions: PaddleSeg 2.8.0, Copyright (c) 2020-2022 PaddlePaddle Authors,
Apache License 2.0.
"""
from __future__ import annotations

import importlib

import numpy as np
import paddle
import paddle.nn.functional as F

UPSTREAM_VERSION = "2.8.0"


class CompatError(RuntimeError):
    """The installed paddleseg is not the release these fixes were measured on."""


def _modules():
    import paddleseg
    from paddleseg.models.losses import cross_entropy_loss
    from paddleseg.utils import metrics

    return paddleseg, cross_entropy_loss, importlib.import_module("paddleseg.core.train"), metrics


def originals() -> dict:
    """The upstream functions the fixes replace (the unpatched behaviour, for the tests)."""
    if not _ORIGINALS:
        _, ce, train, metrics = _modules()
        _ORIGINALS.update(post_process_loss=ce.CrossEntropyLoss._post_process_loss,
                          loss_computation=train.loss_computation, calculate_area=metrics.calculate_area)
    return dict(_ORIGINALS)


_ORIGINALS: dict = {}


# --- fix 1: CrossEntropyLoss -------------------------------------------------------------------
def _post_process_loss(self, logit, label, semantic_weights, loss):
    """Upstream ``CrossEntropyLoss._post_process_loss`` with the two int64 x float32 products cast
    (marked FIX); same numbers as paddle 2 computed."""
    if self.avg_non_ignore:
        mask = paddle.cast(label != self.ignore_index, dtype='float32')
    else:
        mask = paddle.ones(label.shape, dtype='float32')
    mask.stop_gradient = True
    label.stop_gradient = True

    if loss.ndim > mask.ndim:
        loss = paddle.squeeze(loss, axis=-1)
    loss = loss * mask
    if semantic_weights is not None:
        loss = loss * semantic_weights

    if self.weight is not None:
        _one_hot = F.one_hot(label * mask.astype(label.dtype), logit.shape[-1])  # FIX: int64 * int64
        coef = paddle.sum(_one_hot * self.weight, axis=-1)
    else:
        coef = paddle.ones_like(label, dtype='float32')  # FIX: float32, as mask

    if self.top_k_percent_pixels == 1.0:
        avg_loss = paddle.mean(loss) / (paddle.mean(mask * coef) + self.EPS)
    else:
        loss = loss.reshape((-1, ))
        top_k_pixels = int(self.top_k_percent_pixels * loss.numel())
        loss, indices = paddle.topk(loss, top_k_pixels)
        coef = coef.reshape((-1, ))
        coef = paddle.gather(coef, indices)
        coef.stop_gradient = True
        coef = coef.astype('float32')
        avg_loss = loss.mean() / (paddle.mean(coef) + self.EPS)

    return avg_loss


# --- fix 2: core.train's l[0] ------------------------------------------------------------------
def _loss_computation(logits_list, labels, edges, losses):
    """Upstream ``loss_computation``, each loss reshaped to [1] (paddle 2's shape)."""
    return [loss.reshape([1]) for loss in _ORIGINALS["loss_computation"](logits_list, labels, edges, losses)]


# --- fix 3: calculate_area ---------------------------------------------------------------------
def calculate_area(pred, label, num_classes, ignore_index=255):
    """Upstream ``paddleseg.utils.metrics.calculate_area`` with ``paddle.stack`` instead of
    ``paddle.concat`` for the per-class 0-D sums (marked FIX).

    Returns:
        (intersect_area, pred_area, label_area): int64 [num_classes] each; pixels whose label is
        ``ignore_index`` count in none of them except ``label_area`` of a class equal to it.
    """
    if len(pred.shape) == 4:
        pred = paddle.squeeze(pred, axis=1)
    if len(label.shape) == 4:
        label = paddle.squeeze(label, axis=1)
    if not pred.shape == label.shape:
        raise ValueError('Shape of `pred` and `label should be equal, '
                         'but there are {} and {}.'.format(pred.shape, label.shape))
    pred_area = []
    label_area = []
    intersect_area = []
    mask = label != ignore_index

    for i in range(num_classes):
        pred_i = paddle.logical_and(pred == i, mask)
        label_i = label == i
        intersect_i = paddle.logical_and(pred_i, label_i)
        pred_area.append(paddle.sum(paddle.cast(pred_i, "int64")))
        label_area.append(paddle.sum(paddle.cast(label_i, "int64")))
        intersect_area.append(paddle.sum(paddle.cast(intersect_i, "int64")))

    pred_area = paddle.stack(pred_area)  # FIX: stack 0-D sums
    label_area = paddle.stack(label_area)  # FIX
    intersect_area = paddle.stack(intersect_area)  # FIX

    return intersect_area, pred_area, label_area


def apply() -> None:
    """Install the three fixes (idempotent). Raises CompatError on another paddleseg release."""
    paddleseg, ce, train, metrics = _modules()
    if paddleseg.__version__ != UPSTREAM_VERSION:
        raise CompatError(f"paddleseg {paddleseg.__version__} is installed; paddle_impl/paddleseg_compat.py fixes "
                          f"{UPSTREAM_VERSION} (re-run tests/test_paddleseg_compat.py and re-measure)")
    originals()
    ce.CrossEntropyLoss._post_process_loss = _post_process_loss
    train.loss_computation = _loss_computation
    metrics.calculate_area = calculate_area


def restore() -> None:
    """Put the upstream functions back (tests)."""
    _, ce, train, metrics = _modules()
    found = originals()
    ce.CrossEntropyLoss._post_process_loss = found["post_process_loss"]
    train.loss_computation = found["loss_computation"]
    metrics.calculate_area = found["calculate_area"]


# --- registration in paddleseg's component managers ----------------------------------------------
def paddleseg_model(spec):
    """The spec's paddle twin as a PaddleSeg model class (same name, weights and numbers)."""
    from rsport.registry import resolve

    base = resolve(spec.paddle_entry)

    def forward(self, x):
        out = base.forward(self, x)
        return out if self.training else [out]

    def loss_computation(self, logits_list, losses, data):
        """PaddleSeg's hook (core.train): the YAML's first loss on all train outputs, times its coef."""
        return [(losses["coef"][0] * losses["types"][0](*logits_list, data["label"].astype("int64"))).reshape([1])]

    doc = (f"{base.__doc__ or ''}\n\n    PaddleSeg view ({spec.name}): eval returns [prob]; train returns "
           f"{', '.join(spec.train_outputs)}, which loss_computation hands to the YAML's loss ({spec.paddle_loss}).")
    return type(base.__name__, (base,), {"forward": forward, "loss_computation": loss_computation,
                                         "__doc__": doc, "__module__": __name__, "rsport_spec": spec.name})


def register_models() -> dict:
    """Add every registered model (and its loss) to paddleseg's MODELS / LOSSES managers, under the
    class names (FactSeg, JointLoss, ...). Idempotent. Returns {component name: class}."""
    import rsport
    from paddleseg.cvlibs import manager
    from rsport.registry import resolve

    added = {}
    for name in rsport.names():
        spec = rsport.get(name)
        model_name = resolve(spec.paddle_entry).__name__
        current = manager.MODELS.components_dict.get(model_name)
        if getattr(current, "rsport_spec", None) is None:
            if current is not None:
                raise CompatError(f"paddleseg already has a model named {model_name}; ours would replace it")
            manager.MODELS.add_component(paddleseg_model(spec))
        added[model_name] = manager.MODELS[model_name]
        loss = resolve(spec.paddle_loss)
        if loss.__name__ not in manager.LOSSES.components_dict:
            manager.LOSSES.add_component(loss)
        elif manager.LOSSES[loss.__name__] is not loss:
            raise CompatError(f"paddleseg already has a loss named {loss.__name__}; ours would replace it")
        added[loss.__name__] = manager.LOSSES[loss.__name__]
    return added


# --- paddleseg's metric code on an evaluation ---------------------------------------------------
class MetricCheck:
    """paddleseg's metric code beside ours on one evaluation: ``add`` each scene's prediction (its
    ``calculate_area``), then ``result`` compares paddleseg's areas, class IoU, kappa, precision
    and recall with the global confusion matrix and our metrics (rsport/evaluation.py).

    Where paddleseg is right: the areas, class IoU of present classes, kappa, precision, recall.
    Where it is not the original definition: ``mean_iou`` (and class_measurement) give a class
    that never occurs an IoU (precision, recall) of 0 and average it in; the original iSAID
    evaluation leaves such classes out. Both means are reported.
    """

    TOLERANCE = 1e-12  # float64 results of two summation orders

    def __init__(self, num_classes: int, ignore_index: int):
        apply()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.areas = [np.zeros(num_classes, np.int64) for _ in range(3)]

    def add(self, pred: np.ndarray, label: np.ndarray) -> None:
        from paddleseg.utils import metrics

        found = metrics.calculate_area(paddle.to_tensor(pred), paddle.to_tensor(label), self.num_classes,
                                       self.ignore_index)
        for total, area in zip(self.areas, found):
            total += area.numpy()

    def result(self, confusion: np.ndarray, doc: dict) -> dict:
        """``{"paddleseg": {...}}`` for the report; raises CheckError when the codes disagree."""
        from paddleseg.utils import metrics

        from rsport.evaluation import CheckError

        intersect, pred_area, label_area = self.areas
        problems = []
        if not (np.array_equal(intersect, np.diagonal(confusion)) and np.array_equal(pred_area, confusion.sum(0))
                and np.array_equal(label_area, confusion.sum(1))):
            problems.append("calculate_area's areas differ from the confusion matrix")
        tensors = [paddle.to_tensor(a) for a in self.areas]
        class_iou, miou = metrics.mean_iou(*tensors)
        kappa = metrics.kappa(*tensors)
        _, precision, recall = metrics.class_measurement(*tensors)
        worst = 0.0
        for name, theirs in (("iou", class_iou), ("precision", precision), ("recall", recall)):
            ours = np.array([np.nan if v is None else v for v in doc[name]], np.float64)
            known = np.isfinite(ours)
            worst = max(worst, float(np.abs(np.asarray(theirs, np.float64)[known] - ours[known]).max(initial=0.0)))
        if doc["kappa"] is not None:
            worst = max(worst, abs(float(kappa) - doc["kappa"]))
        if worst > self.TOLERANCE:
            problems.append(f"paddleseg's IoU / precision / recall / kappa differ from ours by {worst:.3g}")
        if problems:
            raise CheckError("paddleseg metric cross-check failed: " + "; ".join(problems))
        return {"paddleseg": {
            "agrees": True, "max_abs_diff": worst, "miou_absent_as_zero": float(miou), "kappa": float(kappa),
            "note": "paddleseg.utils.metrics (calculate_area, mean_iou, kappa, class_measurement) on the same "
                    "predictions: areas equal the confusion matrix; class IoU, precision, recall and kappa "
                    "equal ours; its mean_iou counts classes absent from labels and predictions as IoU 0"}}
