"""Porting mistakes a ViT port makes possible: each one must FAIL the right alignment step and name
the right module (tiny variant, float64, as tests/test_align.py)."""
import dataclasses

import numpy as np
import pytest

import rsport
from rsport.alignment import steps
from rsport.alignment.context import Context
from rsport.frameworks import adapter as backend
from rsport.weights import ConversionError, translate
from rsport import rules
from rsport.rules import TORCH

NAME = "vit_s16_upernet"


def context(tmp_path, mutate=None, spec=None, dtype="float64"):
    return Context.for_spec(spec or rsport.get(NAME), dtype, tmp_path, variant="tiny", mutate_paddle=mutate)


def test_clean_tiny_twins_pass_forward_loss_backward(tmp_path):
    ctx = context(tmp_path)
    for step in (steps.forward, steps.loss, steps.backward):
        result = step(ctx)
        assert result.passed and result.max_abs <= 1e-10, (result.step, result.first_divergence)


def test_missing_linear_transpose_is_caught_by_the_converter_where_shapes_differ(monkeypatch):
    """Without the layout op, every non-square Linear (qkv, fc1, fc2) is a shape mismatch; the
    square ``attn.proj`` would load silently, which is why the harness test below exists."""
    spec = rsport.get(NAME)
    tb, pb = backend("torch"), backend("paddle")
    state = tb.state_arrays(tb.build(spec, "tiny"))
    monkeypatch.delitem(rules.LAYER_OPS, ("Linear", "weight"))
    with pytest.raises(ConversionError) as err:
        translate(spec, state, TORCH, pb.build(spec, "tiny"))
    report = str(err.value)
    assert "backbone.blocks.0.attn.qkv.weight" in report and "backbone.blocks.0.mlp.fc1.weight" in report
    assert "attn.proj.weight" not in report


def test_missing_linear_transpose_of_a_square_linear(tmp_path):
    """A square Linear loaded without the transpose fits by shape; forward names that Linear."""
    def bug(model):
        proj = model.backbone.blocks[3].attn.proj
        proj.weight.set_value(np.ascontiguousarray(proj.weight.numpy().T))

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.blocks.3.attn.proj"
    assert result.details["cause"].startswith("Linear weight loaded without the transpose")


def test_layernorm_epsilon_default_instead_of_1e_6(tmp_path):
    def bug(model):
        model.backbone.blocks[5].norm2._epsilon = 1e-5

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.blocks.5.norm2"
    assert result.details["cause"].startswith("epsilon: 1e-05 on the paddle side where torch's 1e-06")


def test_gelu_tanh_approximation_instead_of_exact(tmp_path):
    def bug(model):
        model.backbone.blocks[7].mlp.act._approximate = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.blocks.7.mlp.act"
    assert result.details["cause"].startswith("GELU approximation: True on the paddle side")


def test_gelu_tanh_in_the_adapter(tmp_path):
    """In fpn1 the tanh GELU moves the taps by only ~2.3e-4 of their scale (measured, tiny),
    below the float32 tap profile (5e-4): float32 passes it; float64 names the layer."""
    def bug(model):
        model.backbone.fpn1[2]._approximate = True

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.fpn1.2"


def test_pos_embed_interpolation_mode_changed(tmp_path):
    """bilinear instead of bicubic: caught at an input whose token grid differs from the
    pretraining grid (tiny: 3x3 table, 64x64 input = 4x4 tokens) and named at the resampler."""
    def bug(model):
        model.backbone.pos_resize.mode = "bilinear"

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "backbone.pos_resize"


def test_pos_embed_interpolation_mode_is_invisible_at_the_pretraining_grid(tmp_path):
    """At the table's own grid nothing is resampled: the same bug passes, so alignment inputs
    must differ from img_size (the registry's align and tiny inputs do)."""
    def bug(model):
        model.backbone.pos_resize.mode = "bilinear"

    base = rsport.get(NAME)
    spec = dataclasses.replace(base, tiny_input=(2, base.tiny_kwargs["img_size"], base.tiny_kwargs["img_size"]))
    assert steps.forward(context(tmp_path, bug, spec=spec)).passed
