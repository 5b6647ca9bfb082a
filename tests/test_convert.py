"""convert/torch2paddle.py and convert/paddle2torch.py, end to end on the tiny variants."""
import json
import shutil

import numpy as np
import paddle
import pytest
import torch

import rsport
from convert import core
from rsport.io import sha256
from tests.conftest import MODELS, run_cli


def torch_state(path):
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def assert_no_output(folder, dst):
    assert not dst.exists(), f"{dst} was written"
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("name", MODELS)
def test_embedded_default_converts_with_parity(name, reference_files):
    files = reference_files[name]
    manifest = json.loads((files["paddle"].parent / (files["paddle"].name + ".manifest.json")).read_text())
    assert manifest["source"]["sha256"] == sha256(files["reference"])
    assert manifest["target"]["sha256"] == sha256(files["paddle"])
    assert manifest["counts"]["missing"] == manifest["counts"]["unexpected"] == manifest["counts"]["mismatched"] == 0
    for dtype, bound in (("float32", 1e-4), ("float64", 1e-10)):
        for out in manifest["parity"][dtype]["outputs"].values():
            assert out["passed"] and out["max_abs"] <= bound, (dtype, out)
    assert "float64" in files["stdout"] and "PASS" in files["stdout"]
    # the embedded default really has non-default BN statistics
    state = torch_state(files["torch"])
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert means and all(np.abs(m).max() > 0 for m in means) and all(np.abs(v - 1).max() > 0 for v in variances)


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_bit_exact(name, reference_files, tmp_path):
    """torch .pth -> paddle -> torch gives back every tensor bit for bit, the BN step counters the
    paddle file has no place for included (kept by the first conversion's manifest)."""
    files = reference_files[name]
    there, back = tmp_path / "there.pdparams", tmp_path / "back.pth"
    proc = run_cli("convert/torch2paddle.py", name, "--variant", "tiny", "--src", files["torch"], "--dst", there)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("convert/paddle2torch.py", name, "--variant", "tiny", "--src", there, "--dst", back)
    assert proc.returncode == 0, proc.stderr
    assert "restored" in proc.stdout
    original, returned = torch_state(files["torch"]), torch_state(back)
    assert list(original) == list(returned)
    for key, value in original.items():
        assert value.dtype == returned[key].dtype and np.array_equal(value, returned[key]), key


def test_round_trip_without_manifest_recreates_step_counters(reference_files, tmp_path):
    files = reference_files["factseg50"]
    lonely = tmp_path / "copy.pdparams"
    proc = run_cli("convert/torch2paddle.py", "factseg50", "--variant", "tiny", "--src", files["torch"],
                   "--dst", tmp_path / "there.pdparams")
    assert proc.returncode == 0, proc.stderr
    shutil.copy(tmp_path / "there.pdparams", lonely)
    back = tmp_path / "back.pth"
    proc = run_cli("convert/paddle2torch.py", "factseg50", "--variant", "tiny", "--src", lonely, "--dst", back)
    assert proc.returncode == 0, proc.stderr
    assert "recreated" in proc.stdout
    original, returned = torch_state(files["torch"]), torch_state(back)
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            assert returned[key].dtype == np.int64 and returned[key].shape == () and returned[key] == 0
        else:
            assert np.array_equal(value, returned[key]), key


@pytest.mark.parametrize("wrapper", ["model_ddp", "state_dict"])
def test_wrapped_checkpoints_convert(wrapper, reference_files, tmp_path):
    files = reference_files["factseg50"]
    state = torch.load(files["torch"], weights_only=True)
    if wrapper == "model_ddp":  # the published factseg50.pth layout
        payload = {"model": {f"module.{k}": v for k, v in state.items()}, "opt": {"lr": 0.007}, "global_step": 60000}
    else:
        payload = {"state_dict": state, "meta": {"epoch": 1}}
    src, dst = tmp_path / "wrapped.pth", tmp_path / "out.pdparams"
    torch.save(payload, src)
    proc = run_cli("convert/torch2paddle.py", "factseg50", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 0, proc.stderr
    assert "unwrapped" in proc.stdout
    assert ("stripped the DDP prefix" in proc.stdout) == (wrapper == "model_ddp")
    ours, plain = paddle.load(str(dst)), paddle.load(str(files["paddle"]))
    assert list(ours) == list(plain) and all(np.array_equal(ours[k].numpy(), plain[k].numpy()) for k in plain)


def test_paddlers_naming_imports(reference_files, tmp_path):
    """PaddleRS publishes FactSeg weights with list-indexed FPN names (inner_blocks.{k-1})."""
    files = reference_files["factseg50"]
    state = paddle.load(str(files["paddle"]))
    renamed = {}
    for key, value in state.items():
        for kind in ("inner", "layer"):
            for k in range(1, 5):
                key = key.replace(f"fpn.fpn_{kind}{k}.", f"fpn.{kind}_blocks.{k - 1}.")
        renamed[key] = value
    assert any(".inner_blocks.0." in k for k in renamed)
    src, dst = tmp_path / "factseg_isaid.pdparams", tmp_path / "from_paddlers.pth"
    paddle.save(renamed, str(src))
    proc = run_cli("convert/paddle2torch.py", "factseg50", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 0, proc.stderr
    assert "detected paddlers naming" in proc.stdout
    original, returned = torch_state(files["torch"]), torch_state(dst)
    assert all(np.array_equal(v, returned[k]) for k, v in original.items() if not k.endswith("num_batches_tracked"))


def _bad_source(kind, reference, folder):
    path = folder / f"{kind}.pth"
    state = torch.load(reference, weights_only=True)
    if kind == "missing":
        return path
    if kind == "not_a_checkpoint":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated":
        data = reference.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "another_model":
        torch.save({"backbone.conv.weight": torch.zeros(8, 3, 3, 3), "head.fc.weight": torch.zeros(10, 8)}, path)
    elif kind == "no_bn_buffers":
        torch.save({k: v for k, v in state.items() if "running_" not in k}, path)
    elif kind == "shape_mismatch":
        torch.save({**state, "fg_cls.weight": torch.zeros(5, *state["fg_cls.weight"].shape[1:])}, path)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(1)], path)
    return path


BAD = {
    "missing": "no such file",
    "not_a_checkpoint": "is not a readable torch checkpoint",
    "truncated": "is not a readable torch checkpoint",
    "another_model": "is this another model's checkpoint?",
    "no_bn_buffers": "running statistics of BatchNorm layers",
    "shape_mismatch": "fg_cls.weight -> fg_cls.weight: source (5, 8, 1, 1) float32, target (16, 8, 1, 1) float32",
    "not_a_dict": "expected a dict of tensors",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_fails_clearly_and_writes_nothing(kind, reference_files, tmp_path):
    src = _bad_source(kind, reference_files["factseg50"]["torch"], tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "result.pdparams"
    proc = run_cli("convert/torch2paddle.py", "factseg50", "--variant", "tiny", "--src", src, "--dst", dst)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert BAD[kind] in proc.stderr
    assert_no_output(out, dst)
    if kind == "no_bn_buffers":  # every missing buffer is listed by name
        assert "resencoder.resnet.bn1._mean  <- expected source resencoder.resnet.bn1.running_mean" in proc.stderr
        assert "missing (target needs, source lacks) [62]" in proc.stderr


def test_twins_that_disagree_fail_verification_and_write_nothing(reference_files, tmp_path, monkeypatch):
    """An injected porting bug (BN epsilon 1e-3 in the paddle decoders) is caught by the float64
    check; the converted file is not written."""
    import paddle_impl.models.semantic_fpn as psemantic
    from paddle_impl.ops import BatchNorm2D

    monkeypatch.setattr(psemantic, "norm_layer", lambda c: BatchNorm2D(c, epsilon=1e-3, momentum=0.9))
    dst = tmp_path / "bug.pdparams"
    with pytest.raises(core.ConversionError) as err:
        core.convert(rsport.get("factseg50"), "torch", reference_files["factseg50"]["torch"], dst, "tiny")
    assert err.value.exit_code == 1
    assert "float64 prob" in str(err.value)
    assert_no_output(tmp_path, dst)
    assert not (tmp_path / "bug.pdparams.manifest.json").exists()


def test_unknown_model_and_help():
    proc = run_cli("convert/torch2paddle.py", "facseg50")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown model 'facseg50'; known: " + ", ".join(MODELS)
    helped = run_cli("convert/paddle2torch.py", "--help")
    assert helped.returncode == 0 and "examples:" in helped.stdout and "--naming" in helped.stdout
