"""FarSeg specifics: the annealing softmax focal loss, the step counter, PaddleRS's naming.

The loss reference is transcribed independently from the original (Z-Zheng/FarSeg
module/loss.py annealing_softmax_focalloss with cosine_annealing), in numpy.
"""
import math

import numpy as np
import paddle
import pytest
import torch

import rsport
from paddle_impl.models import farseg as pf
from tests.conftest import run_cli
from tests.test_convert import torch_state
from torch_ref.models import farseg as tf


def numpy_annealing_focal(logit, label, t, t_max=10000, gamma=2.0, ignore=255):
    e = np.exp(logit - logit.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    valid = label != ignore
    index = np.where(valid, label, 0)[:, None]
    ce = np.where(valid, -np.log(np.take_along_axis(p, index, axis=1)[:, 0]), 0.0)
    modulating = np.take_along_axis((1 - p) ** gamma, index, axis=1)[:, 0]
    scales = modulating * (ce.sum() / (ce * modulating).sum())
    scale = scales if t > t_max else scales + 0.5 * (1 - scales) * (math.cos(math.pi * t / t_max) + 1)
    return (ce * scale).sum() / (valid.sum() + logit.shape[0])


@pytest.mark.parametrize("t", [1.0, 5000.0, 10000.0, 20000.0])
def test_annealing_focal_loss_matches_the_original_formula(t):
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 2, (2, 16, 12, 12))
    label = rng.integers(0, 16, (2, 12, 12))
    label[:, :2] = 255
    expected = numpy_annealing_focal(logit, label, t)
    got_t = tf.AnnealingSoftmaxFocalLoss()(torch.from_numpy(logit), torch.tensor(t), torch.from_numpy(label))
    got_p = pf.AnnealingSoftmaxFocalLoss()(paddle.to_tensor(logit), paddle.to_tensor(t), paddle.to_tensor(label))
    np.testing.assert_allclose(float(got_t), expected, rtol=1e-12)
    np.testing.assert_allclose(float(got_p), expected, rtol=1e-12)


def test_step_counter_counts_training_forwards_only():
    spec = rsport.get("farseg50")
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype("float32")
    tmodel = tf.FarSeg(**spec.model_kwargs("tiny"))
    pmodel = pf.FarSeg(**spec.model_kwargs("tiny"))
    tmodel.eval()
    pmodel.eval()
    with torch.no_grad():
        tmodel(torch.from_numpy(x))
    pmodel(paddle.to_tensor(x))
    assert float(tmodel.buffer_step) == float(pmodel.buffer_step) == 0.0
    tmodel.train()
    pmodel.train()
    for expected in (1.0, 2.0):
        _, t_step = tmodel(torch.from_numpy(x))
        _, p_step = pmodel(paddle.to_tensor(x))
        assert float(t_step) == float(p_step) == expected


def test_paddlers_naming_imports(reference_files, tmp_path):
    """PaddleRS's FarSeg (encoder./fsr./cls_head.0., list-indexed FPN, paddle.vision's fc, no
    step counter) imports exactly, with the counter created and the classifier ignored."""
    files = reference_files["farseg50"]
    state = paddle.load(str(files["paddle"]))
    foreign = {}
    for key, value in state.items():
        if key == "buffer_step":
            continue
        for k in range(1, 5):
            key = key.replace(f"fpn.fpn_inner{k}.", f"fpn.inner_blocks.{k - 1}.").replace(
                f"fpn.fpn_layer{k}.", f"fpn.layer_blocks.{k - 1}.")
        key = key.replace("en.resnet.", "encoder.resnet.", 1).replace("sr.", "fsr.", 1)
        foreign[key.replace("cls_pred_conv.", "cls_head.0.")] = value
    foreign["encoder.resnet.fc.weight"] = paddle.zeros([2048, 1000])
    foreign["encoder.resnet.fc.bias"] = paddle.zeros([1000])
    src, dst = tmp_path / "farseg_paddlers.pdparams", tmp_path / "farseg.pth"
    paddle.save(foreign, str(src))
    proc = run_cli("convert/paddle2torch.py", "farseg50", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 0, proc.stderr
    assert "detected paddlers naming" in proc.stdout and "created buffer_step" in proc.stdout
    assert "ignored 2 tensors" in proc.stdout
    original, returned = torch_state(files["torch"]), torch_state(dst)
    assert float(returned["buffer_step"]) == 0.0
    assert all(np.array_equal(v, returned[k]) for k, v in original.items()
               if k != "buffer_step" and not k.endswith("num_batches_tracked"))
