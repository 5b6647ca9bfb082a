"""Porting mistakes that UperNet makes possible: each one injected into the Paddle twin must fail
the right alignment step and name the right place (tiny variant, float64; the tiny input gives a
7x6 c5 map, so every PPM scale has uneven, overlapping adaptive bins)."""
import paddle
import paddle.nn.functional as F
import pytest

import rsport
from rsport.alignment import steps
from rsport.alignment.context import Context


def context(tmp_path, mutate=None):
    return Context.for_spec(rsport.get("upernet_r50"), "float64", tmp_path, variant="tiny", mutate_paddle=mutate)


def test_ppm_pool_scale_changed(tmp_path):
    """One PPM branch pools to 2x2 instead of 3x3 (a typo in pool_scales)."""
    def bug(model):
        model.decode_head.psp_modules[2][0]._output_size = 2

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "decode_head.psp_modules.2.0"


class FixedKernelPool(paddle.nn.Layer):
    """The classic shortcut: AvgPool2D with kernel = stride = size // scale instead of adaptive
    bins. Same output size here (7x6 -> 2x2), different bins (adaptive: rows 0-3 and 3-6)."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        kernel = [x.shape[2] // self.scale, x.shape[3] // self.scale]
        return F.avg_pool2d(x, kernel_size=kernel, stride=kernel, exclusive=True)


def test_non_adaptive_pooling_in_ppm(tmp_path):
    def bug(model):
        model.decode_head.psp_modules[1]._sub_layers["0"] = FixedKernelPool(2)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "decode_head.psp_modules.1.0"


def test_align_corners_flipped_in_the_head(tmp_path):
    """align_corners=True in the UPerHead's top-down and level resizes: the PPM and laterals still
    agree, fpn_convs.0's input does not. The resizes are weight-free ops in UPerHead's forward, so
    the head is named (not fpn_convs.0, their first consumer), with its attribute as the cause."""
    def bug(model):
        model.decode_head.align_corners = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "decode_head"
    assert result.details["cause"].startswith("align_corners=True on the paddle side, False in torch")


def test_align_corners_flipped_in_the_ppm(tmp_path):
    """The PPM resizes its pooled maps back with its own flag (scale 1, a 1x1 map, is immune): the
    PPM is named, with its align_corners attribute as the likely cause."""
    def bug(model):
        model.decode_head.psp_modules.align_corners = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "decode_head.psp_modules"
    assert result.details["cause"].startswith("align_corners=True on the paddle side, False in torch")


def test_align_corners_flipped_in_the_final_resize(tmp_path):
    """EncoderDecoder's resize of the logits to the input: every submodule agrees, the output does
    not; the model's own forward is named, with the attribute as the likely cause."""
    def bug(model):
        model.align_corners = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence.startswith("output:prob ((root) forward")
    assert result.details["cause"].startswith("align_corners=True on the paddle side, False in torch")


@pytest.mark.parametrize("kwargs", [dict(aux_weight=1.0), dict(aux_weight=0.0), dict(avg_non_ignore=True)],
                         ids=["aux_weight_1", "aux_weight_0", "mean_over_valid_pixels"])
def test_wrong_loss_weighting_fails_the_loss_step(tmp_path, monkeypatch, kwargs):
    """The auxiliary weight (0.4) or the denominator (all pixels, mmseg 0.21) ported wrong: the
    train-mode outputs still agree, the loss value does not."""
    from paddle_impl.models.upernet import UperNetLoss

    ctx = context(tmp_path)
    monkeypatch.setattr(ctx.pb, "build_loss", lambda spec: UperNetLoss(ignore_index=spec.ignore_index, **kwargs))
    result = steps.loss(ctx)
    assert not result.passed and result.first_divergence == "loss"
    assert [r.name.partition("@")[0] for r in result.rows if not r.passed and not r.name.startswith("d loss")] == ["loss", "loss"]


def test_aux_weight_wrong_shows_in_aux_head_gradients(tmp_path, monkeypatch):
    """With aux weight 1.0 the decode head's gradients agree and the auxiliary head's do not."""
    from paddle_impl.models.upernet import UperNetLoss

    ctx = context(tmp_path)
    monkeypatch.setattr(ctx.pb, "build_loss", lambda spec: UperNetLoss(ignore_index=spec.ignore_index, aux_weight=1.0))
    result = steps.backward(ctx)
    failed = [r.name for r in result.rows if not r.passed]
    assert not result.passed and failed
    assert not any(name.startswith("decode_head.") for name in failed)
    assert any(name.startswith("auxiliary_head.") for name in failed)
