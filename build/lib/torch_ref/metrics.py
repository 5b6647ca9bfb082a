"""Segmentation metrics from one global confusion matrix (the original isaid_eval's definition).

Twins: torch_ref/ and paddle_impl/metrics.py. IoU_c = diag / (row + col - diag); classes that
never occur in labels or predictions (union 0) are left out of the means; mIoU-fg averages
classes 1.. (background is class 0); kappa = (OA - pe) / (1 - pe).
Means of non-integer values are sequential sums (``cumsum``): torch's and paddle's ``mean``
reduce in different orders and differ by one ulp on 1/3 of random float64 vectors (measured, 10
classes), which the exact metric comparison would report.
"""
import torch


def confusion_matrix(pred, label, num_classes, ignore_index):
    """[num_classes, num_classes] int64 counts, rows = label, columns = prediction."""
    valid = label != ignore_index
    index = label[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape([num_classes, num_classes])


def sequential_mean(values):
    """Mean with a left-to-right sum, so that both frameworks round identically."""
    if values.shape[0] == 0:
        return values.sum() / 0.0  # NaN, as mean() of nothing
    return values.cumsum(0)[-1] / values.shape[0]


def summarize(confusion):
    """Per-class IoU, mIoU, mIoU-fg, overall accuracy and kappa, in float64."""
    cm = confusion.to(torch.float64)  # FRAMEWORK-DIFF: cast API
    diag = torch.diagonal(cm)
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    union = rows + cols - diag
    iou = diag / union
    present = union > 0
    total = cm.sum()
    oa = diag.sum() / total
    expected = (rows * cols).sum() / (total * total)
    return {
        "confusion": confusion,
        "iou": iou,
        "miou": sequential_mean(iou[present]),
        "miou_fg": sequential_mean(iou[1:][present[1:]]),
        "oa": oa,
        "kappa": (oa - expected) / (1 - expected),
    }
