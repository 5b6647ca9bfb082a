"""FactSeg specifics: the eval fusion (with the keepdim fix) and the JointLoss with SOM.

The reference formulas here are transcribed independently from the original repository
(Junjue-Wang/FactSeg module/factseg.py eval branch, module/loss.py JointLoss + som), not
imported from our code.
"""
import numpy as np
import paddle
import pytest
import torch

from paddle_impl.models import factseg as pf
from torch_ref.models import factseg as tf


def original_fusion(fg_logit, bi_logit):
    """The original eval branch, in place and normalised WITHOUT keepdim."""
    binary_prob = torch.sigmoid(bi_logit)
    cls_prob = torch.softmax(fg_logit, dim=1)
    cls_prob[:, 0, :, :] = cls_prob[:, 0, :, :] * (1 - binary_prob).squeeze(dim=1)
    cls_prob[:, 1:, :, :] = cls_prob[:, 1:, :, :] * binary_prob
    z = torch.sum(cls_prob, dim=1)
    return cls_prob.div_(z)


def numpy_joint_loss(fg, bi, label, ratio=0.1, ignore=255):
    """JointLoss + SOM from the reference sheet, in numpy float64."""
    p_fg = 1 / (1 + np.exp(-bi))
    e = np.exp(fg - fg.max(axis=1, keepdims=True))
    c = e / e.sum(axis=1, keepdims=True)
    joint = np.concatenate([c[:, :1] * (1 - p_fg), c[:, 1:] * p_fg], axis=1)
    p = joint / joint.sum(axis=1, keepdims=True)
    valid = label != ignore
    picked = np.take_along_axis(p, np.where(valid, label, 0)[:, None], axis=1)[:, 0]
    losses = np.where(valid, -np.log(picked), 0.0)
    top = np.sort(losses.ravel())[::-1][: int(ratio * losses.size)]
    return top[top != 0].sum() / ((top != 0).sum() + 1e-6)


def logits(batch, classes, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, (batch, classes, size, size)), rng.normal(0, 2, (batch, 1, size, size))


def test_fusion_equals_original_at_batch_1():
    fg, bi = (torch.from_numpy(a) for a in logits(1, 16))
    np.testing.assert_allclose(tf.joint_probability(fg, bi).numpy(), original_fusion(fg, bi).numpy(), rtol=1e-14)


def test_original_fusion_is_wrong_at_batch_2_and_ours_is_right():
    """Batch > 1: the original crashes for 16 classes and silently mis-normalises when the batch
    size equals the class count; ours sums to 1 and equals per-image evaluation."""
    fg, bi = (torch.from_numpy(a) for a in logits(2, 16))
    with pytest.raises(RuntimeError):
        original_fusion(fg, bi)
    fg2, bi2 = (torch.from_numpy(a) for a in logits(2, 2))
    wrong = original_fusion(fg2.clone(), bi2.clone()).numpy()
    assert np.abs(wrong.sum(axis=1) - 1).max() > 1e-3
    ours = tf.joint_probability(fg2, bi2).numpy()
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-14)
    per_image = np.concatenate([tf.joint_probability(fg2[i:i + 1], bi2[i:i + 1]).numpy() for i in range(2)])
    np.testing.assert_allclose(ours, per_image, rtol=1e-14)
    np.testing.assert_allclose(pf.joint_probability(paddle.to_tensor(fg2.numpy()), paddle.to_tensor(bi2.numpy())).numpy(),
                               ours, rtol=1e-13)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 1.0])
def test_joint_loss_matches_the_original_formula_in_both_frameworks(ratio):
    fg, bi = logits(2, 16, size=16, seed=1)
    label = np.random.default_rng(2).integers(0, 16, (2, 16, 16))
    label[:, :3] = 255
    expected = numpy_joint_loss(fg, bi, label, ratio)
    t = tf.JointLoss(ratio=ratio)(torch.from_numpy(fg), torch.from_numpy(bi), torch.from_numpy(label))
    p = pf.JointLoss(ratio=ratio)(paddle.to_tensor(fg), paddle.to_tensor(bi), paddle.to_tensor(label))
    np.testing.assert_allclose(float(t), expected, rtol=1e-12)
    np.testing.assert_allclose(float(p), expected, rtol=1e-12)


def test_ignored_pixels_do_not_change_the_loss():
    fg, bi = logits(2, 16, size=16, seed=3)
    label = np.random.default_rng(4).integers(0, 16, (2, 16, 16))
    label[:, :4] = 255
    base = float(tf.JointLoss(ratio=1.0)(torch.from_numpy(fg), torch.from_numpy(bi), torch.from_numpy(label)))
    fg[:, :, :4] += 50.0
    bi[:, :, :4] -= 50.0
    moved = float(tf.JointLoss(ratio=1.0)(torch.from_numpy(fg), torch.from_numpy(bi), torch.from_numpy(label)))
    assert moved == pytest.approx(base, rel=1e-12)


def test_loss_trains_the_binary_branch():
    """Unlike PaddleRS's CE-only training, the joint loss sends gradient into the foreground logit."""
    fg, bi = logits(1, 16, size=8, seed=5)
    bi_t = torch.from_numpy(bi).requires_grad_()
    label = torch.from_numpy(np.random.default_rng(6).integers(0, 16, (1, 8, 8)))
    tf.JointLoss()(torch.from_numpy(fg), bi_t, label).backward()
    assert bi_t.grad.abs().sum() > 0
