"""Porting mistakes that HRNet + OCR makes possible: each one injected into the Paddle twin must fail
the right alignment step and name the right place (tiny variant, float64, non-square 72x100 input:
branch maps 18x25, 9x13, 5x7, 3x4).

Where the culprit is code between submodules (a resize inside a HighResolutionModule's fuse, the
attention arithmetic between f_object and f_up), the current harness names the first submodule that
CONSUMES the wrong tensor; those tests assert the culprit and are expected to fail until the
harness taps automatically (issue 12)."""
import types
from pathlib import Path

import paddle
import paddle.nn.functional as F
import pytest

import rsport
from rsport.alignment import steps
from rsport.alignment.context import Context
from paddle_impl.models import hrnet_ocr
from paddle_impl.ops import interpolate

def context(tmp_path, mutate=None):
    return Context.for_spec(rsport.get("hrnet48_ocr"), "float64", tmp_path, variant="tiny", mutate_paddle=mutate)


def _fuse_forward_with(resize_fn):
    """HighResolutionModule.forward as a port might write it, with its own upsampling call."""
    def forward_(self, x):
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        x_fuse = []
        for i, fuse_layer in enumerate(self.fuse_layers):
            y = x[0] if i == 0 else fuse_layer[0](x[0])
            for j in range(1, len(x)):
                if j == i:
                    y = y + x[j]
                elif j > i:
                    y = y + resize_fn(fuse_layer[j](x[j]), x[i].shape[2:])
                else:
                    y = y + fuse_layer[j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse
    return forward_


@pytest.mark.parametrize("mode", ["nearest", "bilinear_align_corners_false"])
def test_fuse_upsampling_mode(tmp_path, mode):
    """stage3.0's fuse upsamples its lower-resolution branches with nearest, or with bilinear
    half-pixel (align_corners=False), instead of bilinear align_corners=True. Every submodule of
    stage3.0 still agrees given its own inputs; the culprit is stage3.0's own fuse code, named as
    such (not the first consumer of the wrong sum, stage3.0.relu)."""
    def wrong(x, size):
        if mode == "nearest":
            return interpolate(x, size=tuple(size), mode="nearest")
        return interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    def bug(model):
        module = model.stage3[0]
        module.forward = types.MethodType(_fuse_forward_with(wrong), module)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "stage3.0"


def test_fuse_align_corners_attribute_flipped_is_named_with_its_cause(tmp_path):
    """The same kind of bug through the module's attribute (align_corners=False in stage3.0 only):
    named at stage3.0, with the attribute as the likely cause."""
    def bug(model):
        model.stage3[0].align_corners = False

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "stage3.0"
    assert result.details["cause"].startswith("align_corners=False on the paddle side, True in torch")


def test_branch_order_swapped_in_a_fuse(tmp_path):
    """stage3.0's fuse pairs branch 1 with branch 2's path and vice versa (fuse_layers[0][1] and [0][2]
    exchanged). HRNet's branch widths all differ, so such a swap cannot run silently: the step fails
    and names the line of our fuse where the twin crashed."""
    def bug(model):
        fuse = model.stage3[0].fuse_layers[0]
        first, second = fuse[1], fuse[2]
        fuse._sub_layers["1"], fuse._sub_layers["2"] = second, first

    result = steps.run_step(context(tmp_path, bug), "forward")
    source = Path(hrnet_ocr.__file__).read_text().splitlines()
    line = next(i + 1 for i, text in enumerate(source) if "y = y + resize(fuse_layer[j](x[j])" in text)
    assert not result.passed and result.first_divergence == f"paddle_impl/models/hrnet_ocr.py:{line} (forward)"
    assert result.error.startswith("ValueError") and "channels" in result.error


def _attention_forward_without_scale(self, x, proxy):
    """ObjectAttentionBlock2D.forward with the similarity left unscaled (key_channels ** -0.5 dropped)."""
    batch_size, h, w = x.shape[0], x.shape[2], x.shape[3]
    query = self.f_pixel(x).reshape([batch_size, self.key_channels, -1]).permute(0, 2, 1)
    key = self.f_object(proxy).reshape([batch_size, self.key_channels, -1])
    value = self.f_down(proxy).reshape([batch_size, self.key_channels, -1]).permute(0, 2, 1)
    sim_map = F.softmax(paddle.matmul(query, key), axis=-1)
    context_ = paddle.matmul(sim_map, value).permute(0, 2, 1)
    return self.f_up(context_.reshape([batch_size, self.key_channels, h, w]))


def test_attention_scale_dropped(tmp_path):
    """The object attention without its key_channels ** -0.5 scale: f_pixel, f_object and f_down
    agree; the culprit is the attention block's own arithmetic (named, not f_up, its consumer)."""
    def bug(model):
        block = model.ocr_distri_head.object_context_block
        block.forward = types.MethodType(_attention_forward_without_scale, block)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "ocr_distri_head.object_context_block"


def test_spatial_gather_softmax_over_classes(tmp_path):
    """The gather normalises the soft regions over the K classes (unmerged PR #271) instead of over
    space: the parameter-free ocr_gather_head is the first failing tap and is named."""
    def gather_over_classes(self, feats, probs):
        batch_size, c = probs.shape[0], probs.shape[1]
        probs = F.softmax(probs.reshape([batch_size, c, -1]), axis=1)
        feats = feats.reshape([batch_size, feats.shape[1], -1]).permute(0, 2, 1)
        return paddle.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)

    def bug(model):
        model.ocr_gather_head.forward = types.MethodType(gather_over_classes, model.ocr_gather_head)

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "ocr_gather_head"
    failed = [r.name for r in result.rows if not r.passed]
    assert failed[0] == "ocr_gather_head" and "aux_head" not in failed


def test_balance_weights_swapped_fails_the_loss_step(tmp_path, monkeypatch):
    """The loss weights applied to the wrong outputs (1.0 aux, 0.4 OCR): the train-mode outputs still
    agree, the loss value does not."""
    ctx = context(tmp_path)
    monkeypatch.setattr(ctx.pb, "build_loss",
                        lambda spec: hrnet_ocr.OCRLoss(ignore_index=spec.ignore_index, balance_weights=(1.0, 0.4)))
    result = steps.loss(ctx)
    assert not result.passed and result.first_divergence == "loss"
    assert [r.name for r in result.rows if not r.passed and not r.name.startswith("d loss")][:1] == ["loss"]
    assert result.details["cause"].startswith("loss balance_weights=(1.0, 0.4) on the paddle side")
