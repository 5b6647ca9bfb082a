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


@pytest.fixture(scope="session")
def reference_files(tmp_path_factory):
    """Per model: the tiny embedded torch reference and its converted paddle twin (+ manifest),
    produced once by the real CLI."""
    out = {}
    for name in MODELS:
        folder = tmp_path_factory.mktemp(name)
        dst = folder / f"{name}.pdparams"
        proc = run_cli("convert/torch2paddle.py", name, "--variant", "tiny", "--dst", dst, cwd=folder)
        assert proc.returncode == 0, proc.stderr
        out[name] = {"torch": folder / "output" / "weights" / f"{name}_tiny_reference.pth", "paddle": dst,
                     "stdout": proc.stdout, "folder": folder}
    return out
