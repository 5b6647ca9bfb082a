"""Shared test helpers. Tests use the registry's tiny variants and small inputs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rsport

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
MODELS = rsport.names()


def run_cli(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run one of the repo's command-line tools as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


STEP_COUNT = 7  # BN step counters of the torch checkpoints below, as a trained checkpoint would have


def write_torch_checkpoint(name: str, reference, path):
    """The embedded reference (.safetensors, torch naming) as a torch checkpoint with every tensor
    the torch model has (BN step counters set to STEP_COUNT)."""
    from rsport.frameworks import adapter
    from rsport.weights import fill_side_only, read_neutral

    spec, tb = rsport.get(name), adapter("torch")
    state = fill_side_only(spec, read_neutral(reference), "torch", tb.build(spec, "tiny"))
    tb.save_file({k: (v + STEP_COUNT if k.endswith("num_batches_tracked") else v) for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="session")
def reference_files(tmp_path_factory):
    """Per model: the tiny embedded reference (framework-neutral .safetensors) and its paddle
    conversion (+ manifest), produced once by the real CLI; plus the same weights as a torch
    checkpoint (.pth, BN step counters set)."""
    out = {}
    for name in MODELS:
        folder = tmp_path_factory.mktemp(name)
        dst = folder / f"{name}.pdparams"
        proc = run_cli("convert/torch2paddle.py", name, "--variant", "tiny", "--dst", dst, cwd=folder)
        assert proc.returncode == 0, proc.stderr
        reference = folder / "output" / "weights" / f"{name}_tiny_reference.safetensors"
        out[name] = {"reference": reference, "paddle": dst, "stdout": proc.stdout, "folder": folder,
                     "torch": write_torch_checkpoint(name, reference, folder / f"{name}_tiny.pth")}
    return out
