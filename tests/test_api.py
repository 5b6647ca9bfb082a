"""The open harness: any torch/paddle pair through the Python API (rsport.align_pair), a user's
ModelSpec through --spec and the 'rsport.models' entry point, weights mapped by structure when
names differ, and the console commands. The pair used is examples/unet_pair, written the way a
user would, outside rsport/."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import torch

import rsport
from rsport import automap
from rsport.alignment import STEPS, PairError
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "unet_pair"
sys.path.insert(0, str(EXAMPLE))  # the example is the user's own package, not installed with rsport
from unet_pair import paddle_unet, torch_unet  # noqa: E402  (after the path above)


def unet_pair(width=8):
    torch.manual_seed(0)
    return torch_unet.UNet(width=width), paddle_unet.UNet(width=width)


def batch(seed=0, shape=(2, 3, 24, 40)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """The example's own script (examples/unet_pair/align_pair.py), as a newcomer runs it."""
    import importlib

    out = tmp_path_factory.mktemp("api")
    script = importlib.import_module("align_pair")
    code = script.main(["--out", str(out)])
    return code, out


def test_api_aligns_the_example_in_every_step_and_dtype(api_run):
    code, out = api_run
    assert code == 0
    combined = json.loads((out / "report.json").read_text())
    assert combined["passed"] is True
    for report in combined["reports"]:
        steps = report["models"]["unet"]["steps"]
        assert list(steps) == list(STEPS) and all(s["verdict"] == "PASS" for s in steps.values())
        if report["dtype"] == "float64":
            for step in ("forward", "loss", "backward", "optimizer"):
                assert steps[step]["max_abs"] <= 1e-10
        notes = report["models"]["unet"]["notes"]
        assert any("default statistics" in n for n in notes)  # untrained BN statistics were replaced
    assert "| unet | float64 | backward |" in (out / "report.md").read_text()
    assert (out / "unet" / "float64" / "forward_torch.npy").is_file()   # reprod_log files
    assert sorted(p.name for p in (out / "fixtures" / "unet" / "float32").glob("image*.npy")) == [
        "image0_2x3x40x56.npy", "image0_2x3x56x40.npy", "image1_2x3x40x56.npy"]  # saved inputs, both sizes


def test_api_restores_the_users_models(tmp_path):
    """The models are cast to float64, given seeded BN statistics and trained during the run;
    afterwards they hold their own dtype and weights again."""
    tmodel, pmodel = unet_pair()
    before = {k: v.clone() for k, v in tmodel.state_dict().items()}
    report = rsport.align_pair(tmodel, pmodel, batch(), steps=["forward", "train"], dtypes=["float64"], out=tmp_path)
    assert report.passed, report.table()
    after = tmodel.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_api_names_a_bug_in_the_example_port(tmp_path):
    """BatchNorm epsilon 1e-3 in one paddle layer: forward fails, at that layer."""
    tmodel, pmodel = unet_pair()

    def bug(model):
        model.enc2.bn1._epsilon = 1e-3

    report = rsport.align_pair(tmodel, pmodel, batch(), steps=["forward"], dtypes=["float64"], name="unet",
                               out=tmp_path, mutate_paddle=bug)
    result = report.step("unet", "float64", "forward")
    assert not report.passed and not result.passed
    assert result.first_divergence == "enc2.bn1"


def test_api_without_a_loss_uses_the_probe_loss(tmp_path):
    tmodel, pmodel = unet_pair()
    report = rsport.align_pair(tmodel, pmodel, batch(), steps=["loss", "backward", "metric"], dtypes=["float64"],
                               out=tmp_path)
    assert report.passed, report.table()
    assert "probe loss" in report.step("pair", "float64", "loss").note
    assert report.step("pair", "float64", "metric").verdict == "SKIP"  # no num_classes: not a segmentation contract


@pytest.mark.parametrize("kwargs,message", [
    (dict(weights="both"), "weights='both'"),
    (dict(loss_fns=(torch_unet.SegLoss(),)), "loss_fns must be a (torch_fn, paddle_fn) pair"),
    (dict(loss_fns=(torch_unet.SegLoss(), paddle_unet.SegLoss())), "a loss needs labels"),
    (dict(steps=["forwad"]), "unknown step 'forwad'"),
])
def test_api_bad_arguments_raise_pair_error(tmp_path, kwargs, message):
    tmodel, pmodel = unet_pair()
    with pytest.raises(PairError, match=re.escape(message)):
        rsport.align_pair(tmodel, pmodel, batch(), out=tmp_path, **kwargs)


# --- --spec and entry points ---------------------------------------------------------------------
def run_script(*args, pythonpath=(), cwd=ROOT):
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_spec_from_the_users_package_through_run_all(tmp_path):
    """python align/run_all.py --spec unet_pair.spec: all seven steps, both dtypes, the example's
    own spec (registered only by --spec); the table names the model."""
    proc = run_script(ROOT / "align" / "run_all.py", "--spec", "unet_pair.spec", "--variant", "tiny", "--out", tmp_path,
                      "--threads", 1, pythonpath=[EXAMPLE])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [list(r["models"]) for r in report["reports"]] == [["unet_pair"], ["unet_pair"]]
    assert all(len(r["models"]["unet_pair"]["steps"]) == len(STEPS) for r in report["reports"])


def test_entry_point_registers_the_users_model(tmp_path):
    """An installed package that declares [project.entry-points."rsport.models"] is a registered
    model for every tool (a dist-info folder on the path stands for the installation)."""
    info = tmp_path / "rsport_example_unet_pair-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rsport-example-unet-pair\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[rsport.models]\nunet_pair = unet_pair.spec:SPEC\n")
    proc = run_script("-m", "rsport", "models", pythonpath=[tmp_path, EXAMPLE])
    assert proc.returncode == 0, proc.stderr
    assert "unet_pair" in proc.stdout and "factseg50" in proc.stdout
    proc = run_script(ROOT / "convert" / "torch2paddle.py", "--model", "unet_pair", "--variant", "tiny", "--dst",
                      tmp_path / "u.pdparams", pythonpath=[tmp_path, EXAMPLE], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "float64" in proc.stdout and (tmp_path / "u.pdparams").is_file()


def test_a_spec_that_lacks_something_is_named(tmp_path):
    (tmp_path / "incomplete_spec.py").write_text(
        "from rsport import ModelSpec\n"
        "SPEC = ModelSpec(name='x', torch_entry='m:T', in_channels=3, num_classes=2, mean=(0, 0, 0), std=(1, 1, 1))\n")
    (tmp_path / "wrong_spec.py").write_text(
        "from rsport import ModelSpec\n"
        "SPEC = ModelSpec(name='y', torch_entry='m:T', paddle_entry='m', in_channels=3, num_classes=2, mean=(0,), "
        "std=(1, 1, 1))\n")
    (tmp_path / "empty_spec.py").write_text("x = 1\n")
    for module, expected in (("incomplete_spec", "missing 1 required positional argument: 'paddle_entry'"),
                             ("wrong_spec", "paddle_entry must be 'module:attribute'"),
                             ("empty_spec", "registers no ModelSpec"),
                             ("no_such_module", "cannot import 'no_such_module'")):
        proc = run_script(ROOT / "align" / "run_all.py", "--spec", module, "--out", tmp_path / "o", pythonpath=[tmp_path])
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
        assert not (tmp_path / "o").exists()


# --- weights without a rule table ----------------------------------------------------------------
class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(8)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.mid(torch.relu(self.norm(self.stem(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class PaddleNet(paddle.nn.Layer):
    """The same network, ported with other attribute names (and declared in another order)."""

    def __init__(self):
        super().__init__()
        self.head = paddle.nn.Linear(8, 5)
        self.conv_a = paddle.nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.conv_b = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(8)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.conv_b(paddle.nn.functional.relu(self.bn(self.conv_a(x)))))
        return self.head(x.mean(axis=[2, 3]))


def test_weights_map_by_structure_when_names_differ(tmp_path):
    torch.manual_seed(1)
    tmodel, pmodel = TorchNet(), PaddleNet()
    x = batch(shape=(2, 3, 12, 20))
    report = rsport.align_pair(tmodel, pmodel, x, steps=["forward", "backward"], out=tmp_path)
    assert report.passed, report.table()
    notes = " ".join(report.reports["float32"]["models"]["pair"]["notes"])
    assert "mapped by structure" in notes
    found = automap.structural_rules(tmodel, pmodel, x)
    pairs = {r.torch: r.paddle for r in found.rules}
    assert pairs["stem.weight"] == "conv_a.weight" and pairs["mid.weight"] == "conv_b.weight"
    assert pairs["norm.running_var"] == "bn._variance" and pairs["fc.weight"] == "head.weight"
    path = automap.write_rules(found, tmp_path / "net_rules.py", "TorchNet -> PaddleNet")
    namespace = {}
    exec(path.read_text(), namespace)  # noqa: S102 - the file we just wrote
    again = rsport.align_pair(tmodel, pmodel, x, steps=["forward"], rules=namespace["RULES"], out=tmp_path / "b")
    assert again.passed and "given rules" in " ".join(again.reports["float32"]["models"]["pair"]["notes"])


class TwinScalars(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(8))
        self.beta = torch.nn.Parameter(torch.zeros(8))

    def forward(self, x):
        return x * self.alpha[None, :, None, None] + self.beta[None, :, None, None]


class TwinScalarsPaddle(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.gain = self.create_parameter([8])
        self.shift = self.create_parameter([8])

    def forward(self, x):
        return x * self.gain.reshape([1, -1, 1, 1]) + self.shift.reshape([1, -1, 1, 1])


def test_an_ambiguous_structure_is_refused_with_the_candidates(tmp_path):
    with pytest.raises(PairError) as err:
        rsport.align_pair(TwinScalars(), TwinScalarsPaddle(), batch(shape=(2, 8, 4, 4)), out=tmp_path)
    message = str(err.value)
    assert "alpha [8]: 2 candidates: gain, shift" in message and "rules=" in message


# --- console commands ----------------------------------------------------------------------------
COMMANDS = ["align", "convert", "export", "infer", "benchmark", "tipc", "twins", "data", "labels", "models"]


@pytest.mark.parametrize("command", COMMANDS + ["train --framework torch", "train --framework paddle",
                                                 "eval --framework torch", "eval --framework paddle"])
def test_every_console_command_has_help(command):
    exe = shutil.which("rsport")
    assert exe, "the rsport command is not installed: pip install -e . (the README's commands do it)"
    proc = subprocess.run([exe, *command.split(), "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "example" in proc.stdout


def test_rsport_without_a_command_lists_them():
    proc = subprocess.run([sys.executable, "-m", "rsport"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and all(c in proc.stdout for c in COMMANDS)
    proc = subprocess.run([sys.executable, "-m", "rsport", "trian"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command 'trian'")
