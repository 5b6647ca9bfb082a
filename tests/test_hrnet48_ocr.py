"""hrnet48_ocr specifics beyond the registry-wide tests: the OCR head's two softmax axes and the
attention scale, the original criterion (numpy transcription), float64 twin agreement on the tiny
and the full model, the recipe, the published checkpoint's layout, the foreign namings (openseg,
PaddleSeg) and PaddleSeg's own OCRNet measured against our twin."""
import json
import types

import numpy as np
import paddle
import paddle.nn.functional as PF
import pytest
import torch

import rsport
from rsport.alignment.pair import spec_loss
from rsport.frameworks import adapter as backend
from rsport.reference import reference_model
from rsport.weights import plan_for, translate
from rsport.fixtures import image_batch, label_batch
from rsport.registry import resolve
from rsport.rules import PADDLE, TORCH, apply_naming, export_naming
from tests.conftest import DATA, run_cli, write_torch_checkpoint

SPEC = rsport.get("hrnet48_ocr")
TB, PB = backend("torch"), backend("paddle")
TORCH_MOD = "torch_ref.models.hrnet_ocr"
PADDLE_MOD = "paddle_impl.models.hrnet_ocr"


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def bilinear_align_corners(x, size):
    """numpy transcription of bilinear resizing with align_corners=True (src = dst * (in-1)/(out-1))."""
    def axis_weights(n_in, n_out):
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), pos - lo

    lo, hi, f = axis_weights(x.shape[2], size[0])
    x = x[:, :, lo] * (1 - f)[:, None] + x[:, :, hi] * f[:, None]
    lo, hi, f = axis_weights(x.shape[3], size[1])
    return x[..., lo] * (1 - f) + x[..., hi] * f


def tiny_twins(dtype="float64", seed=0):
    """The tiny torch reference (seeded, randomized BN statistics) and its paddle twin, converted."""
    tmodel = reference_model(SPEC, "tiny", "torch", seed)
    pmodel = PB.build(SPEC, "tiny")
    PB.load_state(pmodel, translate(SPEC, TB.state_arrays(tmodel), TORCH, pmodel))
    return TB.cast(tmodel, dtype), PB.cast(pmodel, dtype)


# --- the OCR head -----------------------------------------------------------------------------
@pytest.mark.parametrize("module", [TORCH_MOD, PADDLE_MOD])
def test_spatial_gather_softmax_is_over_space(module):
    """Region k's representation = sum over pixels of softmax_HW(logits_k) * feature: the weights
    of one region sum to 1 over the H*W pixels (PR #271's softmax over classes would not)."""
    rng = np.random.default_rng(0)
    feats, probs = rng.standard_normal((2, 6, 5, 7)), rng.standard_normal((2, 4, 5, 7)) * 3
    gather = resolve(f"{module}:SpatialGather_Module")(4)
    tensor = torch.from_numpy if module == TORCH_MOD else paddle.to_tensor
    out = gather(tensor(feats), tensor(probs)).numpy()
    weights = softmax(probs.reshape(2, 4, -1), axis=2)  # N x K x HW
    expected = np.einsum("nkp,ncp->nck", weights, feats.reshape(2, 6, -1))[..., None]
    assert out.shape == (2, 6, 4, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)
    wrong_axis = np.einsum("nkp,ncp->nck", softmax(probs.reshape(2, 4, -1), axis=1), feats.reshape(2, 6, -1))
    assert np.abs(wrong_axis[..., None] - out).max() > 0.1
    ones = gather(tensor(np.ones_like(feats)), tensor(probs)).numpy()
    np.testing.assert_allclose(ones, 1.0, rtol=0, atol=1e-14)  # softmax weights sum to 1 over space


@pytest.mark.parametrize("module", [TORCH_MOD, PADDLE_MOD])
def test_object_attention_scale_and_softmax_over_regions(module):
    """sim = softmax_K(query . key * key_channels ** -0.5), context = f_up(sim . value): transcribed
    from the block's own f_pixel / f_object / f_down outputs (eval-mode BN)."""
    rng = np.random.default_rng(1)
    is_torch = module == TORCH_MOD
    if is_torch:
        torch.manual_seed(0)
    else:
        paddle.seed(0)
    block = resolve(f"{module}:ObjectAttentionBlock2D")(12, 8)
    block = TB.cast(block, "float64") if is_torch else PB.cast(block, "float64")
    block.eval()
    tensor = torch.from_numpy if is_torch else paddle.to_tensor
    x, proxy = rng.standard_normal((2, 12, 5, 6)), rng.standard_normal((2, 12, 4, 1))
    with (torch.no_grad() if is_torch else paddle.no_grad()):
        out = block(tensor(x), tensor(proxy)).numpy()
        query = block.f_pixel(tensor(x)).numpy().reshape(2, 8, -1).transpose(0, 2, 1)
        key = block.f_object(tensor(proxy)).numpy().reshape(2, 8, -1)
        value = block.f_down(tensor(proxy)).numpy().reshape(2, 8, -1).transpose(0, 2, 1)
        sim = softmax(query @ key * 8 ** -0.5, axis=-1)  # N x HW x K, over the regions
        context = (sim @ value).transpose(0, 2, 1).reshape(2, 8, 5, 6)
        expected = block.f_up(tensor(context)).numpy()
    assert block.key_channels ** -0.5 == 8 ** -0.5
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)
    for wrong in (softmax(query @ key, axis=-1), softmax(query @ key * 8 ** -0.5, axis=1)):  # no scale; over pixels
        with (torch.no_grad() if is_torch else paddle.no_grad()):
            other = block.f_up(tensor((wrong @ value).transpose(0, 2, 1).reshape(2, 8, 5, 6))).numpy()
        assert np.abs(other - out).max() > 1e-3


# --- the loss ---------------------------------------------------------------------------------
def numpy_ocr_loss(aux, seg, label, weights=(0.4, 1.0), class_weights=None, ignore=255):
    """lib/core/criterion.py CrossEntropy: sum_i w_i * CE(resize(score_i) to the label size,
    align_corners=True); CE = sum(cw_y * -log p_y) / sum(cw_y) over the non-ignored pixels."""
    total = 0.0
    for w, score in zip(weights, (aux, seg)):
        if score.shape[2:] != label.shape[1:]:
            score = bilinear_align_corners(score, label.shape[1:])
        logp = np.log(softmax(score, axis=1))
        valid = label != ignore
        y = np.where(valid, label, 0)
        nll = -np.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        cw = np.ones(score.shape[1]) if class_weights is None else np.asarray(class_weights)
        total += w * (cw[y] * nll)[valid].sum() / cw[y][valid].sum()
    return total


@pytest.mark.parametrize("module", [TORCH_MOD, PADDLE_MOD])
@pytest.mark.parametrize("class_weights", [None, "random"])
@pytest.mark.parametrize("score_size", [(12, 14), (4, 5)], ids=["label_sized", "quarter_sized"])
def test_loss_is_the_original_weighted_criterion(module, class_weights, score_size):
    rng = np.random.default_rng(2)
    aux, seg = rng.standard_normal((2, 2, 6, *score_size)) * 2
    label = rng.integers(0, 6, (2, 12, 14))
    label[0, :3] = 255
    cw = None if class_weights is None else tuple(rng.uniform(0.8, 1.2, 6))
    loss = resolve(f"{module}:OCRLoss")(ignore_index=255, class_weights=cw)
    tensor = torch.from_numpy if module == TORCH_MOD else paddle.to_tensor
    got = float(loss(tensor(aux), tensor(seg), tensor(label)))
    expected = numpy_ocr_loss(aux, seg, label, class_weights=cw)
    assert got == pytest.approx(expected, rel=1e-13)
    assert loss.balance_weights == (0.4, 1.0)
    assert got != pytest.approx(numpy_ocr_loss(aux, seg, label, weights=(1.0, 0.4), class_weights=cw), rel=1e-6)


# --- the twins in float64 ------------------------------------------------------------------------
def test_tiny_twins_float64_eval_train_loss_and_every_gradient():
    """Non-square 2x3x72x100 input (branch maps 18x25 .. 3x4): eval probabilities, train outputs,
    loss and the gradient of every parameter agree in float64; dropout off in train mode."""
    tmodel, pmodel = tiny_twins()
    x = image_batch(SPEC, SPEC.fixture_shape("tiny"), 3, "float64")
    assert x.shape[2] != x.shape[3] and x.shape[3] % x.shape[2] and x.shape[2] % x.shape[3]
    expected, actual = TB.forward(tmodel, SPEC, x)["prob"], PB.forward(pmodel, SPEC, x)["prob"]
    assert expected.shape == (2, 16, 72, 100)
    np.testing.assert_allclose(expected.sum(1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)
    label = label_batch(SPEC, (2, 72, 100), seed=4)
    t_flat, t_loss, t_grads, _ = TB.train_pass(tmodel, spec_loss(TB.build_loss(SPEC)), x, label)
    p_flat, p_loss, p_grads, _ = PB.train_pass(pmodel, spec_loss(PB.build_loss(SPEC)), x, label)
    t_out = dict(zip(SPEC.train_outputs, (v for _, v in t_flat)))
    p_out = dict(zip(SPEC.train_outputs, (v for _, v in p_flat)))
    for name in SPEC.train_outputs:
        assert t_out[name].shape == (2, 16, 72, 100)
        np.testing.assert_allclose(p_out[name], t_out[name], rtol=0, atol=1e-10, err_msg=name)
    assert float(p_loss) == pytest.approx(float(t_loss), rel=1e-13)
    assert set(t_grads) == set(p_grads) == {n for n, _ in tmodel.named_parameters()}
    for name, grad in t_grads.items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(p_grads[name], grad, rtol=0, atol=1e-10 * max(1.0, np.abs(grad).max()),
                                   err_msg=name)


def test_full_model_float64_eval_agrees():
    """The full W48 model (seeded reference, randomized BN statistics) at 2x3x164x228: branch maps
    41x57, 21x29, 11x15, 6x8; probabilities agree to 1e-10 in float64."""
    tmodel = reference_model(SPEC, "default")
    pmodel = PB.build(SPEC, "default")
    PB.load_state(pmodel, translate(SPEC, TB.state_arrays(tmodel), TORCH, pmodel))
    x = image_batch(SPEC, SPEC.fixture_shape("default"), 0, "float64")
    assert x.shape == (2, 3, 164, 228)
    expected = TB.forward(TB.cast(tmodel, "float64"), SPEC, x)["prob"]
    actual = PB.forward(PB.cast(pmodel, "float64"), SPEC, x)["prob"]
    assert np.abs(actual - expected).max() <= 1e-10


def test_train_returns_aux_and_ocr_logits_at_input_size():
    """The original's outputs are [aux, ocr] at 1/4; ours are the same logits resized to the input
    (align_corners=True) in that order, which is what the loss resizes them to."""
    tmodel = reference_model(SPEC, "tiny")
    tmodel = TB.cast(tmodel, "float64")
    x = torch.from_numpy(image_batch(SPEC, (2, 3, 72, 100), 5, "float64"))
    TB.train_mode(tmodel)
    captured = {}
    hooks = [getattr(tmodel, name).register_forward_hook(lambda m, i, o, name=name: captured.setdefault(name, o))
             for name in ("aux_head", "cls_head")]
    aux, seg = tmodel(x)
    for hook in hooks:
        hook.remove()
    assert captured["aux_head"].shape == (2, 16, 18, 25)
    for name, out in (("aux_head", aux), ("cls_head", seg)):
        expected = bilinear_align_corners(captured[name].detach().numpy(), (72, 100))
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-12)


# --- the recipe -------------------------------------------------------------------------------
def test_recipe_is_the_original_sgd_schedule_in_both_frameworks():
    """SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every parameter, no clipping, poly 0.9 set
    AFTER each step from the index of the step just taken (adjust_learning_rate(i_iter)): steps 0
    and 1 use the base LR. Torch and paddle agree on LRs and parameters after 3 steps in float64."""
    recipe = dict(SPEC.recipe, max_iters=10)
    assert (recipe["lr"], recipe["momentum"], recipe["weight_decay"], recipe["clip_norm"], recipe["power"]) == (
        0.01, 0.9, 5e-4, None, 0.9)
    tmodel, pmodel = tiny_twins()
    names = [n for n, _ in tmodel.named_parameters()]
    rng = np.random.default_rng(6)
    grads = [{n: rng.standard_normal(dict(tmodel.named_parameters())[n].shape) * scale for n in names}
             for scale in (100.0, 0.01, 10.0)]  # large norms: clipping would show
    start = {n: p.detach().numpy().copy() for n, p in tmodel.named_parameters()}
    t_lr, t_params = TB.optimizer_steps(tmodel, grads, recipe)
    p_lr, p_params = PB.optimizer_steps(pmodel, grads, recipe)
    original_lr = [0.01] + [0.01 * (1 - i / 10) ** 0.9 for i in range(2)]  # set after step i from index i
    np.testing.assert_allclose(t_lr, original_lr, rtol=1e-15)
    np.testing.assert_array_equal(p_lr, t_lr)
    for n in names:  # numpy SGD (momentum buffer = grad + wd * p at step 0), float32-rounded coefficients
        p, buf = start[n].copy(), None
        for lr, g in zip(original_lr, grads):
            d = g[n] + float(np.float32(5e-4)) * p
            buf = d if buf is None else float(np.float32(0.9)) * buf + d
            p = p - lr * buf
        np.testing.assert_allclose(t_params[n], p, rtol=1e-12, atol=1e-14, err_msg=n)
        np.testing.assert_allclose(p_params[n], t_params[n], rtol=1e-12, atol=1e-14, err_msg=n)


# --- checkpoints and foreign namings ----------------------------------------------------------------
def _original_keys(num_classes=16):
    """The ORIGINAL module tree's keys (tests/data), with the class-dependent shapes for ``num_classes``."""
    keys = json.loads((DATA / "hrnet48_ocr_original_keys.json").read_text())["keys"]
    return [(k, [num_classes, *s[1:]] if k.startswith(("cls_head.", "aux_head.3.")) else s) for k, s in keys]


def test_published_checkpoint_layout_loads_strictly():
    """hrnet_ocr_cs_trainval_8227_torch11.pth is a FullModel state (19 classes): 'model.' + the
    original keys, plus the criterion's class weights. The hrnetseg_fullmodel naming strips the
    prefix and sets the weights aside (reported); the rest loads strictly into the reference."""
    gen = torch.Generator().manual_seed(0)
    state = {f"model.{k}": (torch.randn(s, generator=gen) if not k.endswith("num_batches_tracked")
                            else torch.tensor(7)) for k, s in _original_keys(19)}
    state["loss.criterion.weight"] = torch.rand(19, generator=gen)
    naming = SPEC.torch_namings["hrnetseg_fullmodel"]
    arrays, notes = apply_naming({k: v.numpy() for k, v in state.items()}, naming)
    assert any("ignored 1 tensors" in n and "loss.criterion.weight" in n for n in notes)
    model = resolve(SPEC.torch_entry)(**dict(SPEC.kwargs, num_classes=19))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)
    assert torch.equal(model.cls_head.weight, state["model.cls_head.weight"])


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """The tiny embedded reference as a torch checkpoint and its native paddle conversion, made once
    by the real CLI."""
    folder = tmp_path_factory.mktemp("hrnet48_ocr")
    dst = folder / "native.pdparams"
    proc = run_cli("convert/torch2paddle.py", "hrnet48_ocr", "--variant", "tiny", "--dst", dst, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    reference = folder / "output" / "weights" / "hrnet48_ocr_tiny_reference.safetensors"
    return write_torch_checkpoint("hrnet48_ocr", reference, folder / "reference.pth"), dst


def _paddle_arrays(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


@pytest.mark.parametrize("naming", ["hrnetseg_fullmodel", "openseg"])
def test_torch_namings_convert_onto_ours_and_back(naming, tiny_reference, tmp_path):
    """Our tiny reference written in the foreign naming (openseg: zero OCR conv biases) is detected,
    converts strictly (every tensor used once) to the same paddle weights as the native file, and
    maps back onto the foreign names bit for bit."""
    src_native, dst_native = tiny_reference
    native = {k: v.numpy() for k, v in torch.load(src_native, weights_only=True).items()}
    foreign = export_naming(native, SPEC.torch_namings[naming])
    src, dst = tmp_path / f"{naming}.pth", tmp_path / f"{naming}.pdparams"
    torch.save({k: torch.from_numpy(v) for k, v in foreign.items()}, src)
    proc = run_cli("convert/torch2paddle.py", "hrnet48_ocr", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 0, proc.stderr
    assert f"detected {naming} naming" in proc.stdout
    ours, expected = _paddle_arrays(dst), _paddle_arrays(dst_native)
    assert list(ours) == list(expected) and all(np.array_equal(ours[k], expected[k]) for k in expected)
    back, _ = apply_naming(foreign, SPEC.torch_namings[naming])
    again = export_naming(back, SPEC.torch_namings[naming])
    assert set(again) == set(foreign) and all(np.array_equal(again[k], foreign[k]) for k in foreign)


def test_openseg_full_layout_maps_everything_but_its_3x3_aux_conv():
    """openseg.pytorch's real HRNet_W48_OCR key list (tests/data, dumped from its module tree):
    1897 tensors, 7 OCR conv biases folded, every other tensor mapped onto ours, except aux_head.0,
    a 3x3 conv where the original has a 1x1, which the strict plan reports with both shapes."""
    keys = json.loads((DATA / "hrnet48_ocr_openseg_keys.json").read_text())["keys"]
    arrays = {k: np.zeros(s, np.int64 if k.endswith("num_batches_tracked") else np.float32) for k, s in keys}
    mapped, notes = apply_naming(arrays, SPEC.torch_namings["openseg"])
    assert any("folded 7 conv biases" in n for n in notes) and any("3x3" in n for n in notes)
    plan, _, _ = plan_for(SPEC, mapped, TORCH, PB.build(SPEC, "default"))
    assert not plan.missing and not plan.unexpected and not plan.conflicts
    assert [(s, t, a, b) for s, t, a, b, _ in plan.mismatched] == [
        ("aux_head.0.weight", "aux_head.0.weight", "(720, 720, 3, 3) float32", "(720, 720, 1, 1) float32")]
    assert len(plan.mappings) == 1576 - 1


def test_openseg_bias_folding_is_the_same_function():
    """openseg's OCR 1x1 convs carry a bias that the original lacks. A model with such NONZERO biases
    and our weights otherwise, imported through the naming (bias folded into the BN's running mean),
    computes the same probabilities in eval and the same logits in train mode (batch statistics
    cancel the bias)."""
    torch.manual_seed(0)
    model = TB.cast(reference_model(SPEC, "tiny"), "float64")
    biased = TB.cast(reference_model(SPEC, "tiny"), "float64")
    state = TB.state_arrays(biased)
    foreign = export_naming(state, SPEC.torch_namings["openseg"])
    rng = np.random.default_rng(7)
    for fold in SPEC.torch_namings["openseg"].folds:
        conv = biased.get_submodule(fold.bias.removesuffix(".bias"))
        conv.bias = torch.nn.Parameter(torch.from_numpy(rng.normal(0, 0.5, conv.out_channels)))
        foreign[fold.bias] = conv.bias.detach().numpy()
    imported, _ = apply_naming(foreign, SPEC.torch_namings["openseg"])
    TB.load_state(model, imported)
    x = torch.from_numpy(image_batch(SPEC, (2, 3, 72, 100), 8, "float64"))
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), biased(x).numpy(), rtol=0, atol=1e-12)
        TB.train_mode(model)
        TB.train_mode(biased)
        for a, b in zip(model(x), biased(x)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-10)


# --- PaddleSeg ------------------------------------------------------------------------------------
def _paddleseg_ocrnet(num_classes=16, small=False, padding_same=False, align_corners=True):
    from paddleseg.models import OCRNet
    from paddleseg.models.backbones.hrnet import HRNet, HRNet_W48

    if small:  # PaddleSeg hard-codes the 64-channel stem; everything else as our tiny variant
        backbone = HRNet(stage1_num_blocks=(1,), stage1_num_channels=(8,), stage2_num_blocks=(1, 1),
                         stage2_num_channels=(4, 8), stage3_num_modules=1, stage3_num_blocks=(1, 1, 1),
                         stage3_num_channels=(4, 8, 16), stage4_num_modules=2, stage4_num_blocks=(1, 1, 1, 1),
                         stage4_num_channels=(4, 8, 16, 32), padding_same=padding_same, align_corners=align_corners)
        return OCRNet(num_classes, backbone, [0], ocr_mid_channels=16, ocr_key_channels=8, align_corners=align_corners)
    return OCRNet(num_classes, HRNet_W48(padding_same=padding_same, align_corners=align_corners), [0],
                  align_corners=align_corners)


def test_paddleseg_naming_converts_onto_ours_and_back():
    """PaddleSeg 2.8's real OCRNet(HRNet_W48) state (1583 tensors, its own random init with nonzero
    OCR biases) maps onto our paddle twin with every tensor used once (7 biases folded); our state
    maps back onto PaddleSeg's names and loads into its model strictly."""
    paddleseg = _paddleseg_ocrnet()
    theirs = {k: v.numpy() for k, v in paddleseg.state_dict().items()}
    assert len(theirs) == 1583
    naming = SPEC.paddle_namings["paddleseg"]
    mapped, notes = apply_naming(theirs, naming)
    assert any("folded 7 conv biases" in n for n in notes)
    ours = PB.build(SPEC, "default")
    schema = PB.schema(ours)
    assert set(mapped) == set(schema) and all(mapped[k].shape == schema[k].shape for k in schema)
    plan, _, _ = plan_for(SPEC, mapped, PADDLE, TB.build(SPEC, "default"))
    assert plan.ok and len(plan.mappings) == len(mapped) == 1576
    back = export_naming(mapped, naming)
    assert set(back) == set(theirs) and all(back[k].shape == theirs[k].shape for k in theirs)
    unfolded = {k for k in theirs if not k.endswith(("_conv.bias", "_batch_norm._mean"))
                or k.startswith(("head.conv3x3_ocr", "head.aux_head", "backbone."))}
    assert all(np.array_equal(back[k], theirs[k]) for k in unfolded)
    missing, unexpected = _paddleseg_ocrnet().set_state_dict({k: paddle.to_tensor(v) for k, v in back.items()})
    assert not missing and not unexpected


class _Taps:
    """Forward outputs of named sublayers (flattened lists) of one paddle model."""

    def __init__(self, model, names):
        self.out, layers = {}, dict(model.named_sublayers())
        self.handles = [layers[n].register_forward_post_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def record(layer, inputs, output):
            outs = output if isinstance(output, (list, tuple)) else [output]
            self.out.setdefault(name, [o.numpy() for o in outs])
        return record

    def remove(self):
        for h in self.handles:
            h.remove()


def _exact_paddleseg_interpolation(monkeypatch):
    """Route PaddleSeg's bilinear resizes through paddle_impl.ops.interpolate: paddle's native kernel
    computes align_corners=True coordinates in float32 even for float64 tensors (README, fix 2)."""
    import paddleseg.models.backbones.hrnet as ps_hrnet
    import paddleseg.models.ocrnet as ps_ocrnet
    from paddle_impl.ops import interpolate

    def exact(x, size=None, scale_factor=None, mode="nearest", align_corners=False, align_mode=0, **_):
        assert align_mode == 0 and scale_factor is None  # what PaddleSeg's HRNet and OCRNet pass
        return interpolate(x, size=[int(s) for s in size], mode=mode, align_corners=align_corners)

    patched = types.SimpleNamespace(**{n: getattr(PF, n) for n in dir(PF) if not n.startswith("_")})
    patched.interpolate = exact
    monkeypatch.setattr(ps_hrnet, "F", patched)
    monkeypatch.setattr(ps_ocrnet, "F", patched)


def _small_pair(dtype, **paddleseg_kwargs):
    """Our paddle twin in the PaddleSeg-expressible small size (64-channel stem) with seeded weights
    and BN statistics, and PaddleSeg's OCRNet holding the same weights through the naming."""
    kwargs = dict(SPEC.model_kwargs("tiny"), stem_width=64)
    paddle.seed(0)
    ours = resolve(SPEC.paddle_entry)(**kwargs)
    rng = np.random.default_rng(0)
    state = {}
    for k, v in ours.state_dict().items():
        shape = v.shape
        if k.endswith("_variance"):
            state[k] = rng.uniform(0.5, 2.0, shape)
        elif k.endswith(("_mean", ".bias")):
            state[k] = rng.normal(0, 0.2, shape)
        elif len(shape) == 1:
            state[k] = rng.uniform(0.5, 1.5, shape)
        else:
            state[k] = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
    state = {k: v.astype("float32") for k, v in state.items()}
    PB.load_state(ours, state)
    theirs = _paddleseg_ocrnet(small=True, **paddleseg_kwargs)
    missing, unexpected = theirs.set_state_dict(
        {k: paddle.to_tensor(v) for k, v in export_naming(state, SPEC.paddle_namings["paddleseg"]).items()})
    assert not missing and not unexpected
    ours.eval()
    theirs.eval()
    return PB.cast(ours, dtype), PB.cast(theirs, dtype)


def _compare(ours, theirs, x):
    """Our probabilities and softmax of PaddleSeg's eval logits (it returns [logit at input size])."""
    with paddle.no_grad():
        mine = ours(paddle.to_tensor(x)).numpy()
        other = PF.softmax(theirs(paddle.to_tensor(x))[0], axis=1).numpy()
    return np.abs(mine - other).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_paddleseg_ocrnet_agrees_when_built_like_the_original(dtype, monkeypatch):
    """PaddleSeg's own OCRNet with HRNet(padding_same=False, align_corners=True), align_corners=True
    and our weights computes the original's function in eval: same head structure (its extra OCR
    biases are zero after the naming), same softmax axes and attention scale key_channels ** -0.5,
    BN momentum 0.9 (= torch 0.1, irrelevant in eval), dropout 0.1 instead of 0.05 (off in eval).
    float32: float noise. float64: paddle's native bilinear kernel (float32 coordinates) leaves
    ~1e-7; with exact interpolation in PaddleSeg too, what remains (~1e-12) is PaddleSeg's
    BatchNorm, paddle's kernel, applying epsilon in float32 where ours and the original apply 1e-5."""
    x = image_batch(SPEC, (2, 3, 72, 100), 9, dtype)
    ours, theirs = _small_pair(dtype)
    if dtype == "float32":
        assert _compare(ours, theirs, x) < 1e-6
        return
    native = _compare(ours, theirs, x)
    assert 1e-9 < native < 1e-5  # the float32-coordinate kernel, nothing else:
    _exact_paddleseg_interpolation(monkeypatch)
    assert _compare(ours, theirs, x) < 1e-11


def _first_divergence(ours, theirs, x, tol=1e-10):
    """Pairs of (our layer, PaddleSeg's layer) for every conv and every HighResolutionModule, the
    first one whose output differs (in our call order), and per-branch verdicts of that module."""
    naming = SPEC.paddle_namings["paddleseg"]
    layers = dict(ours.named_sublayers())
    convs = [n for n, layer in layers.items() if isinstance(layer, paddle.nn.Conv2D)]
    pairs = {n: next(iter(export_naming({f"{n}.weight": np.zeros(1)}, naming))).removesuffix(".weight")
             for n in convs}
    pairs.update({f"stage{s}.{m}": f"backbone.st{s}.stage_st{s}_{m + 1}"
                  for s in (2, 3, 4) for m in range(len(getattr(ours, f"stage{s}")))})
    mine, other = _Taps(ours, list(pairs)), _Taps(theirs, list(pairs.values()))
    with paddle.no_grad():
        ours(paddle.to_tensor(x))
        theirs(paddle.to_tensor(x))
    mine.remove()
    other.remove()
    for name in mine.out:  # call order (outputs recorded when each layer finishes)
        diffs = [np.abs(a - b).max() if a.shape == b.shape else np.inf
                 for a, b in zip(mine.out[name], other.out[pairs[name]])]
        if max(diffs) > tol:
            return name, pairs[name], diffs
    return None


def test_paddleseg_default_padding_same_diverges_at_the_stem(monkeypatch):
    """PaddleSeg's default padding_same=True pads a stride-2 3x3 conv on an even size by 0 before and
    1 after (TensorFlow 'SAME'); the original pads 1 on both sides. Same output size, shifted
    sampling: the very first conv differs, and so does everything after it."""
    _exact_paddleseg_interpolation(monkeypatch)
    x = image_batch(SPEC, (2, 3, 72, 100), 9, "float64")
    ours, theirs = _small_pair("float64", padding_same=True, align_corners=True)
    name, their_name, _ = _first_divergence(ours, theirs, x)
    assert (name, their_name) == ("conv1", "backbone.conv_layer1_1._conv")
    assert _compare(ours, theirs, x) > 1e-3


def test_paddleseg_default_align_corners_false_diverges_at_the_first_upsampling_fuse(monkeypatch):
    """With align_corners=False (PaddleSeg's default for HRNet and OCRNet) and the original padding,
    every conv of stage 2 agrees; the first HighResolutionModule output that differs is stage2.0's
    branch 0, the only output with an upsampled term (fuse_layers.0.1 resized from branch 1), while
    its branch 1 (a stride-2 conv of branch 0 plus branch 1, no resize) still agrees."""
    _exact_paddleseg_interpolation(monkeypatch)
    x = image_batch(SPEC, (2, 3, 72, 100), 9, "float64")
    ours, theirs = _small_pair("float64", padding_same=False, align_corners=False)
    name, their_name, diffs = _first_divergence(ours, theirs, x)
    assert (name, their_name) == ("stage2.0", "backbone.st2.stage_st2_1")
    assert diffs[0] > 1e-3 and diffs[1] < 1e-11  # BN epsilon in float32 in PaddleSeg's kernel: ~1e-12
    assert _compare(ours, theirs, x) > 1e-3
