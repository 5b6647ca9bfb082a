"""The injected-bug catalogue's second half: the porting mistakes a review slipped past the
harness, one per model where it applies. Each must fail the right step, name the exact module
that holds the mistake (not its first consumer) and, where one of the usual porting mistakes
explains it, name that as the likely cause (tiny variants, float64 unless noted)."""
import dataclasses
import types

import paddle
import paddle.nn.functional as F
import pytest

import rsport
from rsport.alignment import steps
from rsport.alignment.context import Context


def context(tmp_path, name, mutate=None, dtype="float64", spec=None):
    return Context.for_spec(spec or rsport.get(name), dtype, tmp_path, variant="tiny", mutate_paddle=mutate)


def test_height_and_width_swapped_in_a_resize(tmp_path):
    """deeplabv3p: ``size=like.shape[2:][::-1]`` in the decoder's resize. At a square input it is
    invisible; at the harness's non-square inputs the concat after it cannot even run: the crash is
    named in the model file, with the swap as the likely cause."""
    from paddle_impl.ops import interpolate

    def bug(model):
        resize = model.decode_head.c1_resize

        def swapped(self, x, like):
            return interpolate(x, size=list(like.shape[2:])[::-1], mode="bilinear", align_corners=self.align_corners)
        resize.forward = types.MethodType(swapped, resize)

    result = steps.run_step(context(tmp_path, "deeplabv3p_r50", bug), "forward")
    assert not result.passed and result.error
    assert result.first_divergence.startswith("paddle_impl/models/deeplabv3p.py:")
    assert result.details["cause"].startswith("height and width swapped")


def test_fixed_kernel_pooling_instead_of_a_global_pool(tmp_path):
    """deeplabv3p's image pooling with a fixed AvgPool2D(kernel_size=4): equal to the global pool
    only where the map is 4x4 (a square input of 32 x 4 pixels); at 64x96 the map is 8x12."""
    def bug(model):
        model.decode_head.image_pool._sub_layers["0"] = paddle.nn.AvgPool2D(kernel_size=4)

    result = steps.forward(context(tmp_path, "deeplabv3p_r50", bug))
    assert not result.passed and result.first_divergence == "decode_head.image_pool.0"
    assert "a different layer: paddle AvgPool2D where torch has AdaptiveAvgPool2d" in result.details["cause"]


def test_a_declared_tap_that_never_fires_fails(tmp_path):
    """vit_s16_upernet: ``decode_head.lateral_convs`` is a LayerList, never called itself; declared as
    a tap, it would have been blamed on the next tap that fires. Now it is an error."""
    base = rsport.get("vit_s16_upernet")
    spec = dataclasses.replace(base, taps=base.taps + ("decode_head.lateral_convs",))
    result = steps.forward(context(tmp_path, "vit_s16_upernet", spec=spec))
    assert not result.passed and result.first_divergence == "tap:decode_head.lateral_convs"
    assert any(r.problem and "never fired" in r.problem for r in result.rows)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_focal_gamma_changed_in_the_loss(tmp_path, monkeypatch, dtype):
    """farseg50: gamma 2.0 -> 2.5. The normalised focal weights keep the loss VALUE, so only the
    gradient it sends to the logits differs (the harness starts mid-annealing, where the focal
    term is active): the loss step fails and names the loss and its attribute, in both dtypes."""
    ctx = context(tmp_path, "farseg50", dtype=dtype)
    build = ctx.pb.build_loss

    def gamma_25(spec):
        loss = build(spec)
        loss.gamma = 2.5
        return loss

    monkeypatch.setattr(ctx.pb, "build_loss", gamma_25)
    result = steps.loss(ctx)
    assert not result.passed and result.first_divergence == "loss"
    assert [r.name for r in result.rows if not r.passed and not r.name.startswith(("d loss", "loss"))] == []
    assert result.details["cause"].startswith("loss gamma=2.5 on the paddle side, 2.0 in torch")


def test_swapped_decoder_branches(tmp_path):
    """factseg50: the foreground decoder fed the binary FPN and vice versa. Both FPNs agree, the
    decoders' inputs do not: the wiring of the model's own forward is named."""
    def bug(model):
        def forward(self, x):
            features = self.resencoder(x)
            fg_logit = self.fg_cls(self.fg_decoder(self.bifpn(features)))
            bi_logit = self.bi_cls(self.bi_decoder(self.fgfpn(features)))
            fg_logit = F.interpolate(fg_logit, scale_factor=4.0, mode="bilinear", align_corners=True)
            bi_logit = F.interpolate(bi_logit, scale_factor=4.0, mode="bilinear", align_corners=True)
            return (fg_logit, bi_logit) if self.training else F.softmax(fg_logit, axis=1)
        model.forward = types.MethodType(forward, model)

    result = steps.forward(context(tmp_path, "factseg50", bug))
    assert not result.passed and result.first_divergence == "(root)"
    assert result.details["location_kind"] == "wiring" and "the input of fg_decoder" in result.details["location_detail"]


def test_reversed_concat_order_in_the_head(tmp_path):
    """upernet_r50: UPerHead concatenates its FPN outputs in reverse order before fpn_bottleneck."""
    from paddle_impl.models.upernet import resize

    def bug(model):
        head = model.decode_head

        def forward(self, inputs):
            laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
            laterals.append(self.psp_forward(inputs[-1]))
            for i in range(len(laterals) - 1, 0, -1):
                laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
            fpn_outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
            fpn_outs.append(laterals[-1])
            fpn_outs = [fpn_outs[0]] + [resize(out, fpn_outs[0].shape[2:], self.align_corners) for out in fpn_outs[1:]]
            return self.cls_seg(self.fpn_bottleneck(paddle.concat(fpn_outs[::-1], axis=1)))
        head.forward = types.MethodType(forward, head)

    result = steps.forward(context(tmp_path, "upernet_r50", bug))
    assert not result.passed and result.first_divergence == "decode_head"
    assert "the input of decode_head.fpn_bottleneck" in result.details["location_detail"]


def test_wrong_attention_scale(tmp_path):
    """vit_s16_upernet: one block's attention scaled by 1.1 x head_dim ** -0.5. Its qkv agrees, its
    proj's input does not: the attention module is named, and its ``scale`` attribute as the cause."""
    def bug(model):
        model.backbone.blocks[3].attn.scale *= 1.1

    result = steps.forward(context(tmp_path, "vit_s16_upernet", bug))
    assert not result.passed and result.first_divergence == "backbone.blocks.3.attn"
    assert result.details["cause"].startswith("scale=")


def test_class_token_without_position_embedding(tmp_path):
    """vit_s16_upernet: the position embedding added to the patch tokens only. patch_embed and
    pos_resize agree; the first block's input does not: the backbone's forward is named."""
    def bug(model):
        backbone = model.backbone

        def forward(self, x):
            batch = x.shape[0]
            grid = (x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)
            x = self.patch_embed(x)
            pos = self.pos_resize(self.pos_embed, grid)
            x = paddle.concat([self.cls_token.expand([batch, -1, -1]), x + pos[:, 1:]], axis=1)
            features = []
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i in self.out_indices:
                    features.append(x[:, 1:].transpose([0, 2, 1]).reshape([batch, x.shape[2], grid[0], grid[1]]))
            return [op(f) for op, f in zip([self.fpn1, self.fpn2, self.fpn3, self.fpn4], features)]
        backbone.forward = types.MethodType(forward, backbone)

    result = steps.forward(context(tmp_path, "vit_s16_upernet", bug))
    assert not result.passed and result.first_divergence == "backbone"
    assert "the input of backbone.blocks.0" in result.details["location_detail"]


def test_a_crash_in_a_shared_helper_is_named_at_the_model_files_call(tmp_path):
    """deeplabv3p builds its heads from upernet.py's ConvModule. A ConvModule whose conv expects the
    wrong number of channels crashes inside upernet.py; the report names the line of deeplabv3p.py
    that called it, then the helper's frame."""
    def bug(model):
        module = model.decode_head.c1_bottleneck
        out_channels = module.conv.weight.shape[0]
        module.conv = paddle.nn.Conv2D(out_channels + 3, out_channels, 1, bias_attr=False)

    result = steps.run_step(context(tmp_path, "deeplabv3p_r50", bug), "forward")
    assert not result.passed and result.error
    assert result.first_divergence.startswith("paddle_impl/models/deeplabv3p.py:")
    assert " -> paddle_impl/models/upernet.py:" in result.details["location"]
