"""Each framework's own paths run with the other framework hidden (an import of it fails), as on a
machine where only one is installed: paddle train, eval, export and inference without torch;
torch train and eval without paddle. The embedded reference weights are one framework-neutral
file that either framework builds, byte for byte the same."""
import hashlib
import os
import subprocess
import sys

import numpy as np

import rsport
from rsport import reference
from tests.conftest import ROOT

SPEC = rsport.get("factseg50")
HIDDEN = {"torch": ("torch",), "paddle": ("paddle", "paddleseg", "paddle2onnx")}
BOOT = ("import sys, runpy\n"
        "class Hide:  # the hidden packages cannot be found, as if not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {hidden!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {{name!r}} (hidden)', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.argv = {argv!r}\n"
        "runpy.run_path({script!r}, run_name='__main__')\n")


def run_without(framework: str, script: str, *args, cwd) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts with ``framework`` hidden from imports."""
    code = BOOT.format(hidden=HIDDEN[framework], argv=[script, *map(str, args)], script=str(ROOT / script))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_hiding_really_hides(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BOOT.format(hidden=HIDDEN["torch"], argv=["x"], script="/dev/null")
                           + "import torch\n"], capture_output=True, text=True)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_reference_weights_are_byte_identical_from_either_framework():
    from safetensors.numpy import save

    built = {side: save(reference.generate(SPEC, "tiny", side=side)) for side in ("torch", "paddle")}
    assert hashlib.sha256(built["torch"]).hexdigest() == hashlib.sha256(built["paddle"]).hexdigest()


def test_paddle_train_and_eval_run_without_torch(tmp_path):
    """No --weights: paddle builds the embedded reference itself (torch not even importable), and
    the file it writes is the same bytes torch writes."""
    run = tmp_path / "run"
    proc = run_without("torch", "paddle_impl/train.py", "--model", "factseg50", "--variant", "tiny", "--crop", 64, 64,
                       "--iters", 2, "--batch-size", 1, "--save-dir", run, "--log-interval", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "model.pdparams").is_file()
    built_by_paddle = tmp_path / "output" / "weights" / "factseg50_tiny_reference.safetensors"
    assert built_by_paddle.is_file()
    torch_dir = tmp_path / "torch_side"
    torch_dir.mkdir()
    proc = subprocess.run([sys.executable, "-c", "import rsport; from rsport import reference; "
                           "print(reference.ensure(rsport.get('factseg50'), 'tiny', side='torch'))"],
                          cwd=torch_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built_by_torch = torch_dir / "output" / "weights" / "factseg50_tiny_reference.safetensors"
    assert built_by_torch.read_bytes() == built_by_paddle.read_bytes()

    proc = run_without("torch", "paddle_impl/eval.py", "--model", "factseg50", "--variant", "tiny", "--weights",
                       run / "model.pdparams", "--window", 64, "--stride", 48, "--out", tmp_path / "m.json",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "m.json").is_file()


def test_paddle_export_and_inference_run_without_torch(tmp_path):
    from paddle_impl import backend as pb

    pmodel = pb.build(SPEC, "tiny")
    weights = tmp_path / "w.pdparams"
    pb.save_file(reference.reference_arrays(SPEC, "tiny", "paddle", pmodel), weights)
    out = tmp_path / "export"
    proc = run_without("torch", "deploy/export.py", "--model", "factseg50", "--variant", "tiny", "--weights", weights,
                       "--format", "paddle", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "export without torch" in proc.stdout
    image = tmp_path / "scene.png"
    from rsport.data.images import encode_png

    image.write_bytes(encode_png(np.random.default_rng(0).uniform(0, 255, (80, 120, 3)).astype(np.uint8)))
    proc = run_without("torch", "deploy/infer.py", "--model-dir", out, "--input", image, "--out", tmp_path / "pred",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "pred" / "scene_class.png").is_file()


def test_torch_train_and_eval_run_without_paddle(tmp_path):
    run = tmp_path / "run"
    proc = run_without("paddle", "torch_ref/train.py", "--model", "factseg50", "--variant", "tiny", "--crop", 64, 64,
                       "--iters", 2, "--batch-size", 1, "--save-dir", run, "--log-interval", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_without("paddle", "torch_ref/eval.py", "--model", "factseg50", "--variant", "tiny", "--weights",
                       run / "model.pth", "--window", 64, "--stride", 48, "--out", tmp_path / "m.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_torch_checkpoint_in_the_paddle_tree_without_torch_is_one_error(tmp_path):
    """Reading the other framework's checkpoint needs that framework: one clear error line."""
    from torch_ref import backend as tb

    weights = tmp_path / "w.pth"
    tb.save_file(tb.state_arrays(tb.build(SPEC, "tiny")), weights)
    proc = run_without("torch", "paddle_impl/eval.py", "--model", "factseg50", "--variant", "tiny", "--weights",
                       weights, "--window", 64, "--stride", 48, "--out", tmp_path / "m.json", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs torch" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "m.json").exists()
