"""Porting mistakes that DeepLabV3+ (mmseg R-50-D8) makes possible, injected into the Paddle twin:
each one must fail the right alignment step and name the right module (tiny variant, float64).
One of them, the image-pooling branch's align_corners, is provably harmless and is pinned as such."""
import numpy as np
import paddle
import pytest

import rsport
from rsport.alignment import run_specs, steps
from rsport.alignment.context import Context
from rsport.weights import ConversionError, translate
from rsport.rules import TORCH

NAME = "deeplabv3p_r50"


def context(tmp_path, mutate=None):
    return Context.for_spec(rsport.get(NAME), "float64", tmp_path, variant="tiny", mutate_paddle=mutate)


def _set_dilation(conv, dilation):
    """Dilation and the matching padding of a built paddle Conv2D, as a port with the wrong
    number in its constructor would have them."""
    conv._dilation = [dilation, dilation]
    conv._updated_padding = [dilation, dilation]


def test_wrong_dilation_in_one_aspp_branch(tmp_path):
    """Branch 1 with dilation 6 instead of 12 (the output-stride-16 rates 6/12/18 of other
    DeepLabV3+ ports). The tiny model's stride-8 maps are 8x8, so 6 reaches real pixels."""
    def bug(model):
        _set_dilation(model.decode_head.aspp_modules[1].depthwise_conv.conv, 6)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed
    assert result.first_divergence == "decode_head.aspp_modules.1.depthwise_conv.conv"


def test_dilation_not_contracted_in_the_first_block_of_layer4(tmp_path):
    """contract_dilation=True: block 0 of layer4 uses dilation 2, not the stage's 4."""
    def bug(model):
        _set_dilation(model.backbone.layer4[0].conv2, 4)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.layer4.0.conv2"


def test_depthwise_conv_without_groups_cannot_load(tmp_path, monkeypatch):
    """A depthwise conv built without ``groups`` holds [C, C, 3, 3] instead of [C, 1, 3, 3]: the
    converter refuses the weights with both shapes, and the harness reports the failed step."""
    spec = rsport.get(NAME)
    ctx = context(tmp_path)
    build = ctx.pb.build

    def build_without_groups(spec, variant="default"):
        model = build(spec, variant)
        dw = model.decode_head.aspp_modules[2].depthwise_conv
        channels = dw.conv.weight.shape[0]
        dw.conv = paddle.nn.Conv2D(channels, channels, 3, padding=24, dilation=24, bias_attr=False)
        return model

    model = build_without_groups(spec, "tiny")
    with pytest.raises(ConversionError) as err:
        translate(spec, ctx.pair.torch_state, TORCH, model)
    channels = model.decode_head.aspp_modules[2].depthwise_conv.conv.weight.shape[0]
    report = str(err.value)
    assert "1 shape/dtype mismatches" in report
    assert (f"decode_head.aspp_modules.2.depthwise_conv.conv.weight -> decode_head.aspp_modules.2.depthwise_conv."
            f"conv.weight: source ({channels}, 1, 3, 3) float32, target ({channels}, {channels}, 3, 3) float32") in report

    monkeypatch.setattr(ctx.pb, "build", build_without_groups)
    report = run_specs([NAME], ["forward"], ["float64"], tmp_path / "run", variant="tiny")
    result = report.step(NAME, "float64", "forward")
    assert not report.passed and "ConversionError" in result.error
    assert result.first_divergence.startswith("rsport/weights.py:")


def test_image_pool_align_corners_flipped_is_harmless(tmp_path):
    """The image-pooling branch resizes a 1x1 map: with align_corners True or False every output
    pixel samples source pixel 0, in both frameworks. The flip is a no-op, so the harness must
    pass it; this pins the reason the next test flips the other resizes."""
    def bug(model):
        model.decode_head.pool_resize.align_corners = True

    ctx = context(tmp_path, bug)
    result = steps.forward(ctx)
    assert result.passed
    pooled = ctx.cache["eval"]["paddle_taps"]["decode_head.image_pool"]
    assert pooled.shape[2:] == (1, 1)
    resized = ctx.cache["eval"]["paddle_taps"]["decode_head.pool_resize"]
    assert np.array_equal(resized, np.broadcast_to(pooled, resized.shape))


def test_head_align_corners_flipped(tmp_path):
    """mmseg's head-level ``align_corners`` flipped (both resizes in the decode head): invisible
    in the image-pooling branch, caught at the ASPP -> c1 resize."""
    def bug(model):
        model.decode_head.pool_resize.align_corners = True
        model.decode_head.c1_resize.align_corners = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "decode_head.c1_resize"


def test_final_resize_align_corners_flipped(tmp_path):
    """The segmentor's resize of the logits to the input size: eval and train outputs both move."""
    def bug(model):
        model.resize.align_corners = True

    ctx = context(tmp_path, bug)
    result = steps.forward(ctx)
    assert not result.passed and result.first_divergence == "resize"
    assert not steps.loss(ctx).passed


def test_loss_averaged_over_non_ignored_pixels(tmp_path, monkeypatch):
    """mmseg 0.x averages the CE over ALL pixels (ignored ones count as 0); averaging over the
    non-ignored ones (mmseg >= 0.23 ``avg_non_ignore=True``) changes the loss, not the outputs."""
    from paddle_impl.models.deeplabv3p import EncoderDecoderLoss

    ctx = context(tmp_path)
    monkeypatch.setattr(ctx.pb, "build_loss", lambda spec: EncoderDecoderLoss(ignore_index=255, avg_non_ignore=True))
    result = steps.loss(ctx)
    assert not result.passed and result.first_divergence == "loss"
    assert [r.name.partition("@")[0] for r in result.rows if not r.passed and not r.name.startswith("d loss")] == ["loss", "loss"]


def test_auxiliary_weight_not_applied(tmp_path, monkeypatch):
    from paddle_impl.models.deeplabv3p import EncoderDecoderLoss

    ctx = context(tmp_path)
    monkeypatch.setattr(ctx.pb, "build_loss", lambda spec: EncoderDecoderLoss(ignore_index=255, auxiliary_weight=1.0))
    result = steps.loss(ctx)
    assert not result.passed and result.first_divergence == "loss"


def test_loss_matches_mmseg_reduction_by_hand():
    """EncoderDecoderLoss = mean over all N*H*W pixels of the decode CE (ignored pixels 0) +
    0.4 x the same for the auxiliary logits, computed here with numpy."""
    from paddle_impl.models.deeplabv3p import EncoderDecoderLoss as PaddleLoss
    from torch_ref.models.deeplabv3p import EncoderDecoderLoss as TorchLoss
    import torch

    rng = np.random.default_rng(0)
    seg, aux = rng.normal(size=(2, 4, 5, 6)), rng.normal(size=(2, 4, 5, 6))
    label = rng.integers(0, 4, size=(2, 5, 6))
    label[0, :2] = 255

    def ce(logit):
        logp = logit - np.log(np.exp(logit).sum(axis=1, keepdims=True))
        safe = np.where(label == 255, 0, label)
        per_pixel = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
        return np.where(label == 255, 0.0, per_pixel).mean()

    expected = ce(seg) + 0.4 * ce(aux)
    got_torch = float(TorchLoss()(torch.from_numpy(seg), torch.from_numpy(aux), torch.from_numpy(label)))
    got_paddle = float(PaddleLoss()(paddle.to_tensor(seg), paddle.to_tensor(aux), paddle.to_tensor(label)))
    np.testing.assert_allclose([got_torch, got_paddle], expected, rtol=1e-13)
