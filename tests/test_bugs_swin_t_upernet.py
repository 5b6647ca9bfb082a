"""Porting mistakes a Swin port makes possible: each one must FAIL the alignment harness (tiny variant,
float64, as tests/test_align.py) and name the module that holds the mistake.

The harness compares every submodule and each suspect's own inputs (positional and keyword), so a
mask built by a stage and passed down to its blocks is blamed on the stage, not on the first
attention that consumes it.
"""
import numpy as np
import paddle
import pytest

import rsport
from rsport.alignment import steps
from rsport.alignment.context import Context

NAME = "swin_t_upernet"


def context(tmp_path, mutate=None):
    return Context.for_spec(rsport.get(NAME), "float64", tmp_path, variant="tiny", mutate_paddle=mutate)


def test_clean_tiny_twins_pass_forward_loss_backward(tmp_path):
    ctx = context(tmp_path)
    for step in (steps.forward, steps.loss, steps.backward):
        result = step(ctx)
        assert result.passed and result.max_abs <= 1e-10, (result.step, result.first_divergence)


# --- the injected bugs -----------------------------------------------------------------------------
@pytest.fixture
def roll_reversed(monkeypatch):
    """+shift before the attention and -shift after it (the paddle twin's roll calls negated)."""
    import paddle_impl.models.swin_upernet as twin

    native = paddle.roll
    monkeypatch.setattr(twin.paddle, "roll", lambda x, shifts, axis=None: native(x, [-s for s in shifts], axis))


@pytest.fixture
def mask_missing(monkeypatch):
    """The shifted windows attend across region borders (the stage's mask is all zeros)."""
    import paddle_impl.models.swin_upernet as twin

    build = twin.shifted_window_mask
    monkeypatch.setattr(twin, "shifted_window_mask", lambda *args: paddle.zeros_like(build(*args)))


@pytest.fixture
def mask_wrong_windows(monkeypatch):
    """Right values, wrong windows: the mask's window order reversed."""
    import paddle_impl.models.swin_upernet as twin

    build = twin.shifted_window_mask
    monkeypatch.setattr(twin, "shifted_window_mask", lambda *args: paddle.flip(build(*args), axis=[0]))


def index_transposed(model):
    """Key minus query instead of query minus key in one block's relative position index."""
    attn = model.backbone.layers[1].blocks[0].attn
    attn.relative_position_index.set_value(np.ascontiguousarray(attn.relative_position_index.numpy().T))


def qkv_split_heads_first(model):
    """One block's qkv output read as (heads, 3, head_dim) instead of (3, heads, head_dim)."""
    attn = model.backbone.layers[2].blocks[1].attn

    def split(x, mask=None):
        windows, tokens, channels = x.shape
        qkv = attn.qkv(x).reshape([windows, tokens, attn.num_heads, 3, channels // attn.num_heads])
        q, k, v = (qkv[:, :, :, i].transpose([0, 2, 1, 3]) for i in range(3))
        logits = paddle.matmul(q * attn.scale, k, transpose_y=True)
        bias = paddle.gather(attn.relative_position_bias_table, attn.relative_position_index.reshape([-1]))
        logits = logits + bias.reshape([tokens, tokens, -1]).transpose([2, 0, 1]).unsqueeze(0)
        if mask is not None:
            logits = (logits.reshape([-1, mask.shape[0], attn.num_heads, tokens, tokens])
                      + mask.unsqueeze(1).unsqueeze(0)).reshape([-1, attn.num_heads, tokens, tokens])
        out = paddle.matmul(attn.softmax(logits), v).transpose([0, 2, 1, 3]).reshape([windows, tokens, channels])
        return attn.proj(out)

    attn.forward = split


# (bug, how it is injected, the module that holds the mistake)
CASES = {
    "roll_reversed": ("roll_reversed", None, "backbone.layers.0.blocks.1"),
    "mask_missing": ("mask_missing", None, "backbone.layers.0"),
    "mask_wrong_windows": ("mask_wrong_windows", None, "backbone.layers.0"),
    "index_transposed": (None, index_transposed, "backbone.layers.1.blocks.0.attn"),
    "qkv_split_heads_first": (None, qkv_split_heads_first, "backbone.layers.2.blocks.1.attn"),
}
def run_case(request, tmp_path, case):
    fixture, mutate, _ = CASES[case]
    if fixture is not None:
        request.getfixturevalue(fixture)
    return steps.forward(context(tmp_path, mutate))


@pytest.mark.parametrize("case", list(CASES))
def test_bug_names_the_exact_culprit(request, tmp_path, case):
    """The module that holds the mistake is named, not the first one that consumes wrong values (a
    stage-wide mask is built by the stage and passed down: the stage is named)."""
    result = run_case(request, tmp_path, case)
    assert not result.passed and result.max_abs > 1e-6
    assert result.first_divergence == CASES[case][2]


def test_relative_position_index_is_carried_by_the_conversion(tmp_path):
    """The index is a persistent buffer on both sides and the conversion copies it (never
    regenerates it): a checkpoint's index, even a wrong one, arrives unchanged in paddle."""
    from rsport.frameworks import adapter as backend
    from rsport.weights import translate
    from rsport.rules import TORCH

    spec = rsport.get(NAME)
    tb, pb = backend("torch"), backend("paddle")
    state = tb.state_arrays(tb.build(spec, "tiny"))
    key = "backbone.layers.1.blocks.0.attn.relative_position_index"
    state[key] = np.ascontiguousarray(state[key].T)
    converted = translate(spec, state, TORCH, pb.build(spec, "tiny"))
    np.testing.assert_array_equal(converted[key], state[key])
