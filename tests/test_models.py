"""Model behaviour of the twins on tiny variants: outputs, FactSeg fusion, loss, gradients, BN."""
import numpy as np
import paddle
import pytest
import torch

import rsport
from rsport.frameworks import adapter as backend
from rsport.weights import translate
from rsport.fixtures import image_batch, label_batch
from rsport.registry import resolve
from rsport.rules import TORCH
from tests.conftest import MODELS

TB, PB = backend("torch"), backend("paddle")


def twins(name, dtype="float64", **overrides):
    """Tiny torch and paddle models of ``name`` holding identical weights (converted by the rules)."""
    spec = rsport.get(name)
    kwargs = {**spec.model_kwargs("tiny"), **overrides}
    torch.manual_seed(0)
    tmodel, pmodel = resolve(spec.torch_entry)(**kwargs), resolve(spec.paddle_entry)(**kwargs)
    PB.load_state(pmodel, translate(spec, TB.state_arrays(tmodel), TORCH, pmodel))
    tmodel.eval()
    pmodel.eval()
    return spec, TB.cast(tmodel, dtype), PB.cast(pmodel, dtype)


def fixture(spec, dtype="float64", channels=None, batch=None, seed=1):
    b, c, h, w = spec.fixture_shape("tiny")
    spec_c = spec if channels is None else _with_channels(spec, channels)
    return image_batch(spec_c, (batch or b, channels or c, h, w), seed, dtype)


def _with_channels(spec, channels):
    import dataclasses

    return dataclasses.replace(spec, in_channels=channels, mean=(120.0,) * channels, std=(60.0,) * channels)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [None, 2])
def test_eval_outputs_agree_in_float64(name, channels):
    spec, tmodel, pmodel = twins(name, **({} if channels is None else {"in_channels": channels}))
    x = fixture(spec, channels=channels)
    expected, actual = TB.forward(tmodel, spec, x), PB.forward(pmodel, spec, x)
    assert set(expected) == set(actual) == set(spec.eval_outputs)
    for key in spec.eval_outputs:
        assert expected[key].shape == (x.shape[0], spec.num_classes, *x.shape[2:])
        np.testing.assert_allclose(actual[key], expected[key], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_train_outputs_loss_and_every_gradient(name):
    """Train mode: named outputs, the real loss, and a finite gradient for EVERY parameter, in both
    frameworks, with the same loss value in float64."""
    spec, tmodel, pmodel = twins(name)
    x = fixture(spec)
    labels = label_batch(spec, (x.shape[0], *x.shape[2:]), seed=3)
    TB.train_mode(tmodel)
    PB.train_mode(pmodel)
    touts = tmodel(torch.from_numpy(x))
    pouts = pmodel(paddle.to_tensor(x))
    assert len(touts) == len(pouts) == len(spec.train_outputs)
    tloss = TB.build_loss(spec)(*touts, torch.from_numpy(labels))
    ploss = PB.build_loss(spec)(*pouts, paddle.to_tensor(labels))
    np.testing.assert_allclose(float(ploss), float(tloss), rtol=1e-12)
    tloss.backward()
    ploss.backward()
    for pname, p in tmodel.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    for pname, p in pmodel.named_parameters():
        if not p.stop_gradient:
            assert p.grad is not None and np.isfinite(p.grad.numpy()).all() and np.abs(p.grad.numpy()).sum() > 0, pname


@pytest.mark.parametrize("name", MODELS)
def test_bn_running_statistics_update_like_torch(name):
    """One train-mode step moves BN running statistics identically (paddle momentum 0.9 ==
    torch 0.1, unbiased variance): the eval output after it still agrees in float64."""
    spec, tmodel, pmodel = twins(name)
    x = fixture(spec, seed=5)
    TB.train_mode(tmodel)
    PB.train_mode(pmodel)
    with torch.no_grad():
        tmodel(torch.from_numpy(x))
    with paddle.no_grad():
        pmodel(paddle.to_tensor(x))
    tstate = TB.state_arrays(tmodel)
    pstate = PB.state_arrays(pmodel)
    moved = 0
    for tname, value in tstate.items():
        if tname.endswith("running_var"):
            pvalue = pstate[tname.replace("running_var", "_variance")]
            np.testing.assert_allclose(pvalue, value, rtol=1e-12, err_msg=tname)
            moved += not np.allclose(value, 1.0)
    assert moved  # the step really changed the statistics
    tmodel.eval()
    pmodel.eval()
    x2 = fixture(spec, seed=6)
    for key, value in TB.forward(tmodel, spec, x2).items():
        np.testing.assert_allclose(PB.forward(pmodel, spec, x2)[key], value, rtol=0, atol=1e-10)


def test_paddle_batchnorm_upstream_behaviour_still_needs_the_fix():
    """paddle_impl/ops.BatchNorm2D exists because stock paddle updates the running variance with
    the biased batch variance. If upstream changes, this fails: re-check ops.BatchNorm2D."""
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    stock = paddle.nn.BatchNorm2D(3, momentum=0.9)
    stock.to(dtype="float64")
    stock.train()
    stock(paddle.to_tensor(x))
    biased = 0.9 + 0.1 * x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(stock._variance.numpy(), biased, rtol=1e-6)


def test_paddle_bilinear_upstream_behaviour_still_needs_the_fix():
    """paddle_impl/ops.interpolate exists because stock paddle's align_corners=True bilinear is
    float32-accurate on float64 tensors. If upstream fixes it, this fails: drop the workaround."""
    from paddle_impl.ops import interpolate

    x = np.random.default_rng(0).normal(size=(1, 2, 16, 16))
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2.0, mode="bilinear",
                                               align_corners=True).numpy()
    stock = paddle.nn.functional.interpolate(paddle.to_tensor(x), scale_factor=2.0, mode="bilinear",
                                             align_corners=True).numpy()
    ours = interpolate(paddle.to_tensor(x), 2.0, "bilinear", True).numpy()
    assert np.abs(stock - expected).max() > 1e-8
    assert np.abs(ours - expected).max() < 1e-14


@pytest.mark.parametrize("mode, size_in, size_out", [("bilinear", 3, 5), ("bilinear", 1, 3), ("bilinear", 5, 27),
                                                     ("bicubic", 16, 14), ("bicubic", 16, 6)])
def test_paddle_align_corners_false_upstream_behaviour_still_needs_the_fix(mode, size_in, size_out):
    """ops.interpolate's float64 path for align_corners=False exists because stock paddle maps
    coordinates with a float32 ratio when in/out is not dyadic (UPerHead resizes, vit's pos_embed
    resampling). If upstream fixes it, this fails: drop the workaround."""
    from paddle_impl.ops import interpolate

    x = np.random.default_rng(0).normal(size=(1, 2, size_in, size_in))
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size_out, size_out), mode=mode,
                                               align_corners=False).numpy()
    stock = paddle.nn.functional.interpolate(paddle.to_tensor(x), size=[size_out, size_out], mode=mode,
                                             align_corners=False, align_mode=0).numpy()
    ours = interpolate(paddle.to_tensor(x), mode=mode, align_corners=False, size=(size_out, size_out)).numpy()
    assert np.abs(stock - expected).max() > 1e-9
    assert np.abs(ours - expected).max() < 1e-14


@pytest.mark.parametrize("kind", ["layer", "batch_eval", "batch_train"])
def test_paddle_norm_epsilon_upstream_behaviour_still_needs_the_exact_ops(kind):
    """Paddle applies the BatchNorm/LayerNorm epsilon in float32 even to float64 tensors (1e-6 ->
    9.99999997e-07), which moves float64 outputs by ~1e-9 where variances are small. The twins use
    the originals' exact epsilons and paddle_impl/ops.py's BatchNorm2D / LayerNorm, exact in
    float64. If upstream starts applying epsilon in float64, the first assertion fails: the ops can
    then call the native kernels again."""
    from paddle_impl.ops import BatchNorm2D, LayerNorm

    rng = np.random.default_rng(0)
    if kind == "layer":
        x, eps = rng.normal(size=(2, 5, 64)) * 0.001, 1e-6  # small variance: epsilon matters
        expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (64,), eps=eps).numpy()
        stock = paddle.nn.functional.layer_norm(paddle.to_tensor(x), 64, epsilon=eps).numpy()
        layer = LayerNorm(64, epsilon=eps)
        layer.to(dtype="float64")
        ours = layer(paddle.to_tensor(x)).numpy()
    else:
        train = kind == "batch_train"
        x, eps = rng.normal(size=(2, 4, 5, 7)) * 0.003, 1e-5
        mean, var = rng.normal(size=4) * 1e-3, rng.uniform(1e-6, 1e-5, size=4)
        expected = torch.nn.functional.batch_norm(torch.from_numpy(x), torch.from_numpy(mean.copy()),
                                                  torch.from_numpy(var.copy()), training=train, eps=eps).numpy()
        stock_layer, layer = paddle.nn.BatchNorm2D(4, epsilon=eps), BatchNorm2D(4, epsilon=eps)
        results = []
        for bn in (stock_layer, layer):
            bn.to(dtype="float64")
            bn.set_state_dict({"weight": np.ones(4), "bias": np.zeros(4), "_mean": mean, "_variance": var})
            bn.train() if train else bn.eval()
            results.append(bn(paddle.to_tensor(x)).numpy())
        stock, ours = results
    assert np.abs(stock - expected).max() > 1e-10
    assert np.abs(ours - expected).max() < 1e-13


def test_paddle_adaptive_pool_backward_upstream_behaviour_still_needs_the_fix():
    """PPM's adaptive average pooling: paddle's forward uses torch's (overlapping) bins, but its
    float64 backward scales by a float32 1/(bin area). ops.AdaptiveAvgPool2D is exact in float64.
    If upstream fixes the backward, this fails: drop the workaround."""
    from paddle_impl.ops import AdaptiveAvgPool2D

    rng = np.random.default_rng(0)
    x, grad_out = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(2, 3, 3, 3))
    tx = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.adaptive_avg_pool2d(tx, 3)
    expected.backward(torch.from_numpy(grad_out))
    results = {}
    for name, layer in (("stock", paddle.nn.AdaptiveAvgPool2D(output_size=3)), ("ours", AdaptiveAvgPool2D(output_size=3))):
        px = paddle.to_tensor(x, stop_gradient=False)
        out = layer(px)
        out.backward(paddle.to_tensor(grad_out))
        np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=0, atol=1e-15)
        results[name] = np.abs(px.grad.numpy() - tx.grad.numpy()).max()
    assert results["stock"] > 1e-10
    assert results["ours"] < 1e-15


def test_paddle_float32_norm_upstream_behaviour_still_needs_the_fix():
    """ops.clip_grad_norm_ accumulates each tensor's norm in float64 because paddle's float32
    linalg.norm drifts on large tensors (2% at 19M elements). If upstream fixes it, this fails."""
    g = (np.random.default_rng(1).standard_normal(512 * 4096 * 9) * 8.6e-3).astype(np.float32)
    exact = np.linalg.norm(g.astype(np.float64))
    assert abs(float(paddle.linalg.norm(paddle.to_tensor(g))) / exact - 1) > 1e-3
    from types import SimpleNamespace

    from paddle_impl.ops import clip_grad_norm_

    total = clip_grad_norm_([SimpleNamespace(grad=paddle.to_tensor(g))], max_norm=1e9)  # reads .grad only
    assert abs(float(total) / exact - 1) < 1e-6
