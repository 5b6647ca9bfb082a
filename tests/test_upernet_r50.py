"""upernet_r50 specifics beyond the registry-wide tests: mmcv checkpoint containers, the loss
denominator of mmseg 0.21, and the torch reference's behaviour as mmseg defines it."""
import numpy as np
import paddle
import torch
import torch.nn.functional as F

from tests.conftest import run_cli


def test_mmcv_checkpoint_container_converts(reference_files, tmp_path):
    """mmcv saves {'meta': ..., 'state_dict': ..., 'optimizer': ...} without a 'module.' prefix: the
    converter unwraps it, reports the ignored entries and gives the same weights as a plain file."""
    files = reference_files["upernet_r50"]
    state = torch.load(files["torch"], weights_only=True)
    payload = {"meta": {"mmseg_version": "0.21.0", "iter": 80000, "CLASSES": ["background"] * 16},
               "state_dict": state,
               "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}}
    src, dst = tmp_path / "iter_80000.pth", tmp_path / "upernet.pdparams"
    torch.save(payload, src)
    proc = run_cli("convert/torch2paddle.py", "upernet_r50", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 0, proc.stderr
    assert "unwrapped {'state_dict': ...}" in proc.stdout and "meta" in proc.stdout and "optimizer" in proc.stdout
    assert "stripped the DDP prefix" not in proc.stdout
    ours, plain = paddle.load(str(dst)), paddle.load(str(files["paddle"]))
    assert list(ours) == list(plain) and all(np.array_equal(ours[k].numpy(), plain[k].numpy()) for k in plain)


def test_loss_is_mmseg_021_mean_over_all_pixels():
    """decode + 0.4 * aux, each the per-pixel CE averaged over ALL pixels (ignored ones count as 0),
    which is not torch's built-in mean (that one averages over the valid pixels only)."""
    from torch_ref.models.upernet import UperNetLoss

    gen = torch.Generator().manual_seed(0)
    seg, aux = torch.randn(2, 16, 8, 8, generator=gen, dtype=torch.float64), torch.randn(2, 16, 8, 8, generator=gen,
                                                                                         dtype=torch.float64)
    label = torch.randint(0, 16, (2, 8, 8), generator=gen)
    label[0, :3] = 255
    per_pixel = [F.cross_entropy(x, label, ignore_index=255, reduction="none") for x in (seg, aux)]
    expected = per_pixel[0].sum() / label.numel() + 0.4 * per_pixel[1].sum() / label.numel()
    assert torch.allclose(UperNetLoss()(seg, aux, label), expected, rtol=1e-15, atol=0)
    builtin = F.cross_entropy(seg, label, ignore_index=255) + 0.4 * F.cross_entropy(aux, label, ignore_index=255)
    assert not torch.allclose(UperNetLoss()(seg, aux, label), builtin, rtol=1e-6)
    valid = (label != 255).sum()
    assert torch.allclose(UperNetLoss(avg_non_ignore=True)(seg, aux, label), builtin * valid / (valid + 2.0 ** -23))


def test_eval_returns_probabilities_and_train_returns_input_sized_logits():
    import rsport
    from rsport.registry import resolve

    spec = rsport.get("upernet_r50")
    torch.manual_seed(0)
    model = resolve(spec.torch_entry)(**spec.model_kwargs("tiny"))
    x = torch.randn(2, 3, 70, 90)
    model.eval()
    with torch.no_grad():
        prob = model(x)
    assert prob.shape == (2, 16, 70, 90) and torch.allclose(prob.sum(1), torch.ones(2, 70, 90, dtype=prob.dtype))
    model.train()
    seg_logit, aux_logit = model(x)
    assert seg_logit.shape == aux_logit.shape == (2, 16, 70, 90)
