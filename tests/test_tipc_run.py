"""CI: the real TIPC lite_train_lite_infer run for every registered model, offline, through the
same two commands a user types; fails on any failed command or numeric gate.

Per model (registry ``lite`` settings: tiny variant, 128 px crops, 40 iterations, batch 2): train,
loss gate, eval, export, 8 inference combinations (oneDNN on/off x 1|2 threads x batch 1|2),
parity gate. Logs go to a temporary TIPC_OUTPUT folder, kept by pytest for inspection.
"""
import os
import subprocess
from pathlib import Path

import pytest

import rsport
from test_tipc import configs

ROOT = Path(__file__).resolve().parents[1]
MODE = "lite_train_lite_infer"
# train + loss gate + eval + export + every CPU inference combination + parity gate
EXPECTED_COMMANDS = 4 + 2 * 2 * 2 + 1


def run(script: str, config: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TIPC_OUTPUT=str(out), PYTHONWARNINGS="ignore")
    return subprocess.run(["bash", f"test_tipc/{script}", str(config), MODE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name", rsport.names())
def test_lite_train_lite_infer(name, tmp_path):
    config = configs.path_for(name)
    proc = run("prepare.sh", config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("test_train_inference_python.sh", config, tmp_path)
    results = tmp_path / name / MODE / "results_python.log"
    assert results.is_file(), proc.stdout + proc.stderr
    lines = results.read_text().splitlines()
    failed = [line for line in lines if not line.startswith(f" Run successfully with command - {name} - ")]
    assert not failed, "failed commands (logs named at the end of each line):\n" + "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(lines) == EXPECTED_COMMANDS, "\n".join(lines)
    entry = tmp_path / name / MODE / "norm_train_gpus_-1_autocast_fp32"
    assert "loss gate passed" in (entry / "gate_loss.log").read_text()
    assert "parity gate passed" in (entry / "gate_parity.log").read_text()
