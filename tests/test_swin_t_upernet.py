"""swin_t_upernet: the Swin-specific mechanics checked against independent constructions (numpy),
float64 twin agreement (tiny and full), stochastic depth, the AdamW recipe and the mmseg 1.x naming.
Facts: shared/reference/swin_t_upernet.md."""
import json
import math

import numpy as np
import paddle
import pytest
import torch

import rsport
from rsport.frameworks import adapter as backend
from rsport.weights import translate
from rsport.fixtures import image_batch, label_batch
from rsport.registry import resolve
from rsport.alignment.pair import spec_loss
from rsport.rules import TORCH, apply_naming, export_naming
from tests.conftest import DATA
from tests.test_models import twins

NAME = "swin_t_upernet"
SPEC = rsport.get(NAME)
TB, PB = backend("torch"), backend("paddle")
WS, SHIFT = 7, 3


# --- independent numpy constructions -------------------------------------------------------------
def index_by_loops(ws):
    """Relative position index by definition: query i, key j at (i // ws, i % ws), (j // ws, j % ws)."""
    out = np.zeros((ws * ws, ws * ws), dtype=np.int64)
    for i in range(ws * ws):
        for j in range(ws * ws):
            dh, dw = i // ws - j // ws, i % ws - j % ws
            out[i, j] = (dh + ws - 1) * (2 * ws - 1) + (dw + ws - 1)
    return out


def mask_by_wrap(hp, wp, ws, shift):
    """Shifted-window mask from its meaning: after rolling by -shift, token (r, c) of the rolled map
    came from ((r + shift) % hp, (c + shift) % wp); it wrapped around iff r >= hp - shift (rows) or
    c >= wp - shift (columns). Two tokens of one window may attend iff they wrapped alike on both
    axes (then they were neighbours in the unrolled map); otherwise the offset is -100."""
    windows = []
    for wr in range(hp // ws):
        for wc in range(wp // ws):
            rows = [wr * ws + t // ws for t in range(ws * ws)]
            cols = [wc * ws + t % ws for t in range(ws * ws)]
            wrap = [(r >= hp - shift, c >= wp - shift) for r, c in zip(rows, cols)]
            windows.append([[0.0 if wrap[i] == wrap[j] else -100.0 for j in range(ws * ws)] for i in range(ws * ws)])
    return np.asarray(windows)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def block_by_hand(params, x, height, width, shift, heads, roll_sign=-1, split="qkv"):
    """One Swin block in numpy, written from the description (sheet section 3.4-3.6): norm1, zero pad
    right/bottom AFTER the norm (padded tokens unmasked), roll by roll_sign * shift, 7x7 windows,
    attention with q = first C qkv channels, k = next C, v = last C (heads contiguous) and the bias
    table gathered by the index, the wrap mask, reverse, roll back, crop, residual, MLP."""
    eps = 1e-5
    batch, _, c = x.shape
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    h = layer_norm(x, p["norm1.weight"], p["norm1.bias"], eps).reshape(batch, height, width, c)
    hp, wp = -(-height // WS) * WS, -(-width // WS) * WS
    padded = np.zeros((batch, hp, wp, c))
    padded[:, :height, :width] = h
    if shift:
        padded = np.roll(padded, (roll_sign * shift, roll_sign * shift), axis=(1, 2))
    win = padded.reshape(batch, hp // WS, WS, wp // WS, WS, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, WS * WS, c)
    qkv = win @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
    d = c // heads
    if split == "qkv":
        q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(-1, WS * WS, heads, d).transpose(0, 2, 1, 3) for i in range(3))
    else:  # the wrong order a port can make: [k | q | v]
        k, q, v = (qkv[..., i * c:(i + 1) * c].reshape(-1, WS * WS, heads, d).transpose(0, 2, 1, 3) for i in range(3))
    logits = (q * d ** -0.5) @ k.transpose(0, 1, 3, 2)
    table = p["attn.relative_position_bias_table"]
    logits = logits + table[index_by_loops(WS)].transpose(2, 0, 1)[None]
    if shift:
        mask = mask_by_wrap(hp, wp, WS, shift)
        logits = (logits.reshape(batch, -1, heads, WS * WS, WS * WS) + mask[None, :, None]).reshape(logits.shape)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn = attn / attn.sum(-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(-1, WS * WS, c) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    out = out.reshape(batch, hp // WS, wp // WS, WS, WS, c).transpose(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, c)
    if shift:
        out = np.roll(out, (-roll_sign * shift, -roll_sign * shift), axis=(1, 2))
    x = x + out[:, :height, :width].reshape(batch, height * width, c)
    hidden = layer_norm(x, p["norm2.weight"], p["norm2.bias"], eps)
    hidden = gelu(hidden @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    return x + hidden


def torch_block(stage=0, block=1, dim=16, heads=2, seed=0):
    from torch_ref.models.swin_upernet import SwinTransformerBlock

    torch.manual_seed(seed)
    module = SwinTransformerBlock(dim, heads, WS, 0 if block % 2 == 0 else SHIFT).double().eval()
    with torch.no_grad():  # non-trivial norms and bias table
        for name, p in module.named_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


# --- relative position index, mask, roll, padding, qkv split -------------------------------------
def test_relative_position_index_equals_independent_construction():
    from paddle_impl.models.swin_upernet import relative_position_index as paddle_index
    from torch_ref.models.swin_upernet import relative_position_index as torch_index

    expected = index_by_loops(WS)
    assert expected[0, 1] == 83 and expected[1, 0] == 85 and expected[0, 7] == 71 and set(np.diag(expected)) == {84}
    assert expected.min() == 0 and expected.max() == 168
    np.testing.assert_array_equal(torch_index(WS), expected)
    np.testing.assert_array_equal(paddle_index(WS), expected)
    tiny_t, tiny_p = TB.build(SPEC, "tiny"), PB.build(SPEC, "tiny")
    key = "backbone.layers.2.blocks.1.attn.relative_position_index"
    np.testing.assert_array_equal(tiny_t.state_dict()[key].numpy(), expected)
    assert tiny_p.state_dict()[key].dtype == paddle.int64  # a persistent buffer of the same name in paddle
    np.testing.assert_array_equal(tiny_p.state_dict()[key].numpy(), expected)


@pytest.mark.parametrize("hp, wp", [(21, 28), (7, 7), (14, 7), (56, 84)])
def test_shifted_window_mask_values_and_windows(hp, wp):
    from paddle_impl.models.swin_upernet import shifted_window_mask as paddle_mask
    from torch_ref.models.swin_upernet import shifted_window_mask as torch_mask

    expected = mask_by_wrap(hp, wp, WS, SHIFT)
    np.testing.assert_array_equal(torch_mask(hp, wp, WS, SHIFT), expected)
    np.testing.assert_array_equal(paddle_mask(hp, wp, WS, SHIFT), expected)
    assert set(np.unique(expected)) <= {0.0, -100.0}
    masked = [w for w in range(len(expected)) if expected[w].any()]
    cols = wp // WS
    last_row_or_col = [w for w in range(len(expected)) if w // cols == hp // WS - 1 or w % cols == cols - 1]
    assert masked == last_row_or_col  # only windows in the last window row or column are masked


@pytest.mark.parametrize("height, width", [(9, 13), (14, 21), (5, 7), (8, 11)])
@pytest.mark.parametrize("block", [0, 1])
def test_block_equals_the_hand_written_block(height, width, block):
    """Unshifted and shifted blocks, sizes that are not window multiples (padding after norm1,
    unmasked padded tokens), against numpy; wrong roll direction and wrong qkv split differ."""
    module = torch_block(block=block)
    params = {k: v.detach().numpy() for k, v in module.named_parameters()}
    x = np.random.default_rng(1).normal(size=(2, height * width, 16))
    mask = torch.from_numpy(mask_by_wrap(-(-height // WS) * WS, -(-width // WS) * WS, WS, SHIFT))
    with torch.no_grad():
        ours = module(torch.from_numpy(x), height, width, mask).numpy()
    shift = SHIFT if block % 2 else 0
    np.testing.assert_allclose(ours, block_by_hand(params, x, height, width, shift, 2), rtol=0, atol=1e-12)
    assert np.abs(ours - block_by_hand(params, x, height, width, shift, 2, split="kqv")).max() > 1e-3
    if shift:
        assert np.abs(ours - block_by_hand(params, x, height, width, shift, 2, roll_sign=+1)).max() > 1e-3


def test_paddle_block_equals_torch_block_in_float64():
    from paddle_impl.models.swin_upernet import SwinTransformerBlock

    module = torch_block(block=1)
    twin = SwinTransformerBlock(16, 2, WS, SHIFT)
    PB.cast(twin, "float64")  # keeps the int64 index buffer (paddle's Layer.to would cast it)
    for name, value in module.state_dict().items():
        value = value.numpy()
        target = dict(twin.named_parameters()).get(name)
        if target is not None:
            target.set_value(value.T if name.endswith("weight") and "norm" not in name else value)
    x = np.random.default_rng(2).normal(size=(2, 9 * 13, 16))
    mask = mask_by_wrap(14, 14, WS, SHIFT)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), 9, 13, torch.from_numpy(mask)).numpy()
    actual = twin(paddle.to_tensor(x), 9, 13, paddle.to_tensor(mask)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-13)


def test_patch_merging_neighbour_order_and_odd_padding():
    """Concat order (even,even), (odd,even), (even,odd), (odd,odd); odd sizes padded bottom/right."""
    from torch_ref.models.swin_upernet import PatchMerging

    torch.manual_seed(0)
    merge = PatchMerging(3).double()
    height, width = 5, 7
    x = np.random.default_rng(0).normal(size=(2, height * width, 3))
    grid = np.zeros((2, 6, 8, 3))
    grid[:, :height, :width] = x.reshape(2, height, width, 3)
    parts = [grid[:, dr::2, dc::2] for dr, dc in ((0, 0), (1, 0), (0, 1), (1, 1))]
    cat = np.concatenate(parts, axis=-1).reshape(2, -1, 12)
    w = {k: v.detach().numpy() for k, v in merge.named_parameters()}
    expected = layer_norm(cat, w["norm.weight"], w["norm.bias"], 1e-5) @ w["reduction.weight"].T
    with torch.no_grad():
        ours = merge(torch.from_numpy(x), height, width).numpy()
    assert ours.shape == (2, 3 * 4, 6)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("height, width, sizes", [
    (230, 330, [(58, 83), (29, 42), (15, 21), (8, 11)]),  # sheet section 3.8
    (224, 320, [(56, 80), (28, 40), (14, 20), (7, 10)]),
    (70, 102, [(18, 26), (9, 13), (5, 7), (3, 4)]),       # the tiny input
])
def test_stage_sizes_for_inputs_that_are_not_multiples(height, width, sizes):
    tmodel = TB.build(SPEC, "tiny")
    with torch.no_grad():
        feats = tmodel.backbone(torch.zeros(1, 3, height, width))
    assert [tuple(f.shape[2:]) for f in feats] == sizes
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]


# --- float64 twins ---------------------------------------------------------------------------------
def test_tiny_twins_float64_eval_train_loss_and_every_gradient():
    spec, tmodel, pmodel = twins(NAME)
    x = image_batch(spec, spec.fixture_shape("tiny"), 1, "float64")
    labels = label_batch(spec, (x.shape[0], *x.shape[2:]), seed=3)
    np.testing.assert_allclose(PB.forward(pmodel, spec, x)["prob"], TB.forward(tmodel, spec, x)["prob"], rtol=0, atol=1e-10)
    t_out, t_loss, t_grads, _ = TB.train_pass(tmodel, spec_loss(TB.build_loss(spec)), x, labels)
    p_out, p_loss, p_grads, _ = PB.train_pass(pmodel, spec_loss(PB.build_loss(spec)), x, labels)
    assert len(t_out) == len(p_out) == len(spec.train_outputs)
    for (_, expected), (_, actual) in zip(t_out, p_out):
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)
    assert abs(float(p_loss) - float(t_loss)) <= 1e-10
    schema = PB.schema(pmodel)
    assert set(p_grads) == set(t_grads) == {n for n, p in tmodel.named_parameters()}
    for name, grad in t_grads.items():
        other = p_grads[name].T if schema[name].layer_type == "Linear" and name.endswith(".weight") else p_grads[name]
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(other, grad, rtol=0, atol=1e-10, err_msg=name)


def test_full_model_float64_eval_forward_at_a_non_square_size():
    torch.manual_seed(0)
    tmodel = TB.build(SPEC, "default")
    pmodel = PB.build(SPEC, "default")
    PB.load_state(pmodel, translate(SPEC, TB.state_arrays(tmodel), TORCH, pmodel))
    x = image_batch(SPEC, (2, 3, 160, 224), 4, "float64")
    expected = TB.forward(TB.cast(tmodel, "float64"), SPEC, x)["prob"]
    actual = PB.forward(PB.cast(pmodel, "float64"), SPEC, x)["prob"]
    assert expected.shape == (2, 16, 160, 224)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)


# --- stochastic depth --------------------------------------------------------------------------------
def test_drop_path_rates_are_the_original_linspace():
    from torch_ref.models.swin_upernet import DropPath

    tmodel = TB.build(SPEC, "default")
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0
             for layer in tmodel.backbone.layers for b in layer.blocks]
    assert rates == torch.linspace(0, 0.3, 12).tolist()
    assert isinstance(tmodel.backbone.layers[0].blocks[0].drop_path, torch.nn.Identity)
    from paddle_impl.models.swin_upernet import DropPath as PaddleDropPath

    pmodel = PB.build(SPEC, "default")
    assert [b.drop_path.drop_prob if isinstance(b.drop_path, PaddleDropPath) else 0.0
            for layer in pmodel.backbone.layers for b in layer.blocks] == rates


@pytest.mark.parametrize("side", [TORCH, "paddle"])
def test_train_mode_turns_drop_path_off_and_plain_train_keeps_it(side):
    fw = backend(side)
    model = fw.build(SPEC, "tiny")
    drop = [m for m in (model.modules() if side == TORCH else model.sublayers()) if type(m).__name__ == "DropPath"]
    assert drop and all(getattr(type(m), "is_dropout", False) for m in drop)
    fw.train_mode(model)
    assert not any(m.training for m in drop)
    model.train()
    assert all(m.training for m in drop)
    x = image_batch(SPEC, (2, 3, 70, 102), 0, "float32")
    fw.manual_seed(0)
    if side == TORCH:
        a, b = model(torch.from_numpy(x))[0], model(torch.from_numpy(x))[0]
        differs = not torch.equal(a, b)
    else:
        a, b = model(paddle.to_tensor(x))[0], model(paddle.to_tensor(x))[0]
        differs = not np.array_equal(a.numpy(), b.numpy())
    assert differs  # stochastic depth draws differently per call in real training


# --- recipe: AdamW, paramwise decay, mmcv warmup x poly ---------------------------------------------
def test_recipe_numbers_are_the_configs():
    r = SPEC.recipe
    assert (r["optimizer"], r["lr"], tuple(r["betas"]), r["eps"], r["weight_decay"]) == ("adamw", 6e-5, (0.9, 0.999), 1e-8, 0.01)
    assert set(r["no_decay_keys"]) == {"absolute_pos_embed", "relative_position_bias_table", "norm"}
    assert (r["power"], r["min_lr"], r["warmup_iters"], r["warmup_ratio"], r["max_iters"], r["clip_norm"]) == \
        (1.0, 0.0, 1500, 1e-6, 80000, None)


def test_mmcv_warmup_poly_lr_values():
    """Sheet section 7/12: lr(0) = 6e-11; mmcv gives 2.97188e-5 / 5.8875e-5 / 5.88743e-5 at 750 / 1500 /
    1501, where paddle's LinearWarmup(PolynomialDecay) gives 3e-5 / 6e-5 / 5.99993e-5 (pinned below)."""
    from paddle_impl.recipe import mmcv_poly_lr as paddle_lr
    from torch_ref.recipe import mmcv_poly_lr

    r = SPEC.recipe
    assert mmcv_poly_lr(0, 6e-5, r) == pytest.approx(6e-11, rel=1e-12)
    for it, value in ((750, 2.97188e-5), (1500, 5.8875e-5), (1501, 5.88743e-5)):
        assert mmcv_poly_lr(it, 6e-5, r) == pytest.approx(value, rel=2e-6)
    assert mmcv_poly_lr(80000, 6e-5, r) == 0.0
    assert all(paddle_lr(it, 6e-5, r) == mmcv_poly_lr(it, 6e-5, r) for it in range(0, 80000, 997))
    inner = paddle.optimizer.lr.PolynomialDecay(6e-5, decay_steps=80000, end_lr=0.0, power=1.0)
    builtin = paddle.optimizer.lr.LinearWarmup(inner, warmup_steps=1500, start_lr=6e-11, end_lr=6e-5)
    values = []
    for it in range(1502):
        if it in (750, 1500, 1501):
            values.append(builtin())
        builtin.step()
    assert values == pytest.approx([3.0e-5, 6.0e-5, 5.99993e-5], rel=1e-5)  # not mmcv's: hence MmcvPolyLR


def test_no_decay_groups_are_mmcvs():
    """76 tensors / 49,434 elements without weight decay (sheet section 7), the heads' BN keeps it."""
    from torch_ref.recipe import decay_groups

    decayed, plain = decay_groups(TB.build(SPEC, "default"), SPEC.recipe["no_decay_keys"])
    assert (len(plain), sum(p.numel() for _, p in plain)) == (76, 49434)
    assert len(decayed) == 144 and any(name.endswith(".bn.weight") for name, _ in decayed)


@pytest.mark.parametrize("scale", [1.0, 1e-9])
def test_adamw_recipe_three_steps_float64_identical(scale):
    """Both recipes on seeded gradients for 3 steps, with an lr, decay and warmup large enough that
    grouping, decoupled decay, epsilon placement (scale 1e-9: sqrt(v) ~ eps) and schedule all matter."""
    recipe = dict(SPEC.recipe, lr=0.05, weight_decay=0.5, warmup_iters=2, max_iters=5)
    torch.manual_seed(0)
    state = TB.state_arrays(resolve(SPEC.torch_entry)(**SPEC.model_kwargs("tiny")))
    names = [n for n, p in resolve(SPEC.torch_entry)(**SPEC.model_kwargs("tiny")).named_parameters()]
    rng = np.random.default_rng(0)
    steps = [{n: rng.standard_normal(state[n].shape) * scale for n in names} for _ in range(3)]

    def run(fw, no_decay):
        model = fw.build(SPEC, "tiny")
        fw.load_state(model, state if fw is TB else translate(SPEC, state, TORCH, model))
        fw.cast(model, "float64")
        schema = fw.schema(model)
        flip = {n for n in names if fw is PB and schema[n].layer_type == "Linear" and n.endswith(".weight")}
        lrs, params = fw.optimizer_steps(model, [{n: g.T if n in flip else g for n, g in s.items()} for s in steps],
                                         dict(recipe, no_decay_keys=no_decay))
        return lrs, {n: v.T if n in flip else v for n, v in params.items()}

    t_lr, t_params = run(TB, SPEC.recipe["no_decay_keys"])
    p_lr, p_params = run(PB, SPEC.recipe["no_decay_keys"])
    _, wrong = run(PB, ())
    np.testing.assert_array_equal(p_lr, t_lr)
    assert t_lr[0] == pytest.approx(0.05 * 1e-6, rel=1e-9)
    assert max(np.abs(p_params[n] - t_params[n]).max() for n in t_params) <= 1e-12
    assert max(np.abs(wrong[n] - t_params[n]).max() for n in t_params) > 1e-4  # decay grouping matters


# --- mmseg 1.x naming (torch side) and checkpoint containers ---------------------------------------
def test_mmseg1_key_list_round_trip_is_bit_exact():
    naming = SPEC.torch_namings["mmseg1"]
    state = TB.state_arrays(TB.build(SPEC, "default"))
    foreign = export_naming(state, naming)
    expected = json.loads((DATA / f"{NAME}_mmseg1_keys.json").read_text())["keys"]
    assert sorted([k, list(v.shape)] for k, v in foreign.items()) == sorted(expected)
    back, notes = apply_naming(foreign, naming)
    assert list(back) != [] and set(back) == set(state)
    assert all(back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]) for k in state)
    assert "reordered the channels of 9 tensors" in " ".join(notes)


def test_mmseg1_patch_merging_weights_compute_what_ours_compute():
    """mmseg 1.x's PatchMerging (nn.Unfold(2, stride 2) -> LayerNorm(4C) -> Linear) written out here,
    fed the converted weights, equals our PatchMerging; a rename without the reorder does not."""
    naming = SPEC.torch_namings["mmseg1"]
    tmodel = TB.build(SPEC, "tiny").double()
    with torch.no_grad():
        for p in tmodel.backbone.layers[1].downsample.parameters():
            p.add_(0.5 * torch.randn_like(p))
    state = TB.state_arrays(tmodel)
    foreign = export_naming(state, naming)
    merge = tmodel.backbone.layers[1].downsample
    height, width, c = 9, 13, 16
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, height * width, c)))
    with torch.no_grad():
        ours = merge(x, height, width).numpy()

    def unfold_merge(weight, norm_w, norm_b):
        grid = torch.nn.functional.pad(x.reshape(2, height, width, c).permute(0, 3, 1, 2), (0, width % 2, 0, height % 2))
        cols = torch.nn.functional.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)
        cols = torch.nn.functional.layer_norm(cols, (4 * c,), torch.from_numpy(norm_w), torch.from_numpy(norm_b),
                                              eps=1e-5)
        return (cols @ torch.from_numpy(weight).T).numpy()

    key = "backbone.stages.1.downsample."
    mm = unfold_merge(foreign[key + "reduction.weight"], foreign[key + "norm.weight"], foreign[key + "norm.bias"])
    np.testing.assert_allclose(mm, ours, rtol=0, atol=1e-12)
    own = "backbone.layers.1.downsample."
    renamed_only = unfold_merge(state[own + "reduction.weight"], state[own + "norm.weight"], state[own + "norm.bias"])
    assert np.abs(renamed_only - ours).max() > 1e-2


@pytest.mark.parametrize("container", ["mmseg1", "mmseg0"])
def test_checkpoint_containers_convert_to_paddle(tmp_path, container):
    """An mmseg 1.x checkpoint (detected by its keys, reported, reordered) and an mmseg 0.x one
    ({'meta', 'state_dict', 'optimizer'}) convert strictly; the twins then agree in float64."""
    from convert.core import convert  # the converter tool itself is what this test exercises

    torch.manual_seed(3)
    tmodel = TB.build(SPEC, "tiny")
    state = TB.state_arrays(tmodel)
    weights = export_naming(state, SPEC.torch_namings["mmseg1"]) if container == "mmseg1" else state
    src = tmp_path / "ckpt.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2" if container == "mmseg1" else "0.21.0"},
                "state_dict": {k: torch.from_numpy(v) for k, v in weights.items()},
                "optimizer": {"state": {}, "param_groups": []}}, src)
    result = convert(SPEC, TORCH, src, tmp_path / "out.pdparams", "tiny")
    notes = " ".join(result.notes)
    assert ("detected mmseg1 naming" in notes) == (container == "mmseg1")
    assert result.parity["float64"]["outputs"]["prob"]["max_abs"] <= 1e-10
    written = PB.to_numpy(paddle.load(str(tmp_path / "out.pdparams")))
    key = "backbone.layers.0.downsample.reduction.weight"
    np.testing.assert_array_equal(written[key], state[key].T)  # back in the original order, paddle layout


def test_reorder_op_in_a_rule_table_both_directions_is_exact():
    """rules.Reorder as a rule-level op of an ordinary torch<->paddle table: applied in the torch
    layout going to paddle (before the Linear transpose), inverted coming back; bit-exact."""
    from rsport.rules import PADDLE, Reorder, Rule, TensorSpec, apply_plan, make_plan

    op = Reorder(axis=-1, groups=4, perm=(0, 2, 1, 3))
    with pytest.raises(ValueError):
        Reorder(axis=-1, groups=4, perm=(0, 1, 1, 3))
    rules = (Rule("merge", "m.weight", "m.weight", op=op), Rule("same", "{p}", "{p}"))
    weight = np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32)  # torch Linear [out, 4C]
    paddle_schema = {"m.weight": TensorSpec((12, 6), "float32", "Linear", "weight")}
    plan = make_plan({"m.weight": ((6, 12), "float32")}, paddle_schema, rules, TORCH)
    out = apply_plan(plan, {"m.weight": weight}, paddle_schema, rules)["m.weight"]
    np.testing.assert_array_equal(out, op.apply(weight).T)
    torch_schema = {"m.weight": TensorSpec((6, 12), "float32", "Linear", "weight")}
    back_plan = make_plan({"m.weight": ((12, 6), "float32")}, torch_schema, rules, PADDLE)
    back = apply_plan(back_plan, {"m.weight": out}, torch_schema, rules)["m.weight"]
    assert back.dtype == weight.dtype and np.array_equal(back, weight)
    # the permutation itself: paddle-side position c*4+p holds torch-side group perm[p], channel c
    np.testing.assert_array_equal(op.index(8), [0, 4, 2, 6, 1, 5, 3, 7])
