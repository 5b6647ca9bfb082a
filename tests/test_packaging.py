"""A plain (non-editable) install works: the wheel holds the core, the model trees and the tools
(with the TIPC scripts and configs), and an installed copy runs outside the repository."""
import os
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_plain_install_runs_outside_the_repository(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("rsport-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} >= {"rsport", "torch_ref", "paddle_impl", "convert", "align", "deploy",
                                                "test_tipc"}
    assert "test_tipc/configs/factseg50/train_infer_python.txt" in names and "test_tipc/prepare.sh" in names
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = subprocess.run([sys.executable, "-c", "import rsport, align, convert, deploy, test_tipc, torch_ref; "
                            "print(rsport.__file__); print(len(rsport.names()))"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    where, count = probe.stdout.split()
    assert where.startswith(str(target)) and int(count) >= 7
    listing = subprocess.run([sys.executable, "-m", "rsport", "models"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert listing.returncode == 0 and "factseg50" in listing.stdout
