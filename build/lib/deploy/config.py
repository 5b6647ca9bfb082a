"""``deploy.yaml``: what an exported model directory holds and how to feed it.

Written by deploy/export.py, read by deploy/infer.py and deploy/benchmark.py. It names only
files that were written (and checked), with their sha256, plus the input contract
(channels, reader, normalization on the 0..255 scale, padding divisor), the output (op, dtype,
classes, palette) and which artifact each runtime uses by default. framework-free (numpy, yaml).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

FORMAT_VERSION = 1
FILENAME = "deploy.yaml"


class DeployError(Exception):
    """Bad input (a model dir, an image, an argument): one line for ``error: ...``, exit 2."""


@dataclass
class DeployConfig:
    root: Path
    data: dict

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def channels(self) -> int:
        return int(self.data["input"]["channels"])

    @property
    def num_classes(self) -> int:
        return int(self.data["output"]["num_classes"])

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.data["input"]["mean"], np.float32).reshape(-1, 1, 1)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.data["input"]["std"], np.float32).reshape(-1, 1, 1)

    @property
    def reader(self) -> str:
        return self.data["input"]["reader"]

    @property
    def divisor(self) -> int:
        return int(self.data["input"]["divisor"])

    @property
    def palette(self) -> list:
        return self.data["output"]["palette"]

    def artifact(self, key: str) -> dict:
        return self.data["artifacts"][key]

    def path(self, relative: str) -> Path:
        return self.root / relative

    def runtime_artifact(self, runtime: str, artifact: str) -> tuple[str, dict]:
        """(key, entry) of ``artifact``, which must run on ``runtime`` (paddle, onnxruntime)."""
        key = artifact
        if key not in self.data["artifacts"]:
            raise DeployError(f"{self.root / FILENAME}: no artifact {key!r} (written: {', '.join(self.data['artifacts'])})")
        entry = self.data["artifacts"][key]
        if entry["runtime"] != runtime:
            raise DeployError(f"artifact {key!r} runs on {entry['runtime']}, not {runtime}")
        return key, entry


def write(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120))


def read(model_dir: Path) -> DeployConfig:
    """Read and validate ``MODEL_DIR/deploy.yaml``; every named file must exist. DeployError otherwise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DeployError(f"{model_dir}: no such model directory")
    path = model_dir / FILENAME
    if not path.is_file():
        raise DeployError(f"{model_dir}: no {FILENAME} (not an exported model directory; run deploy/export.py)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DeployError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise DeployError(f"{path}: not a deploy.yaml of format_version {FORMAT_VERSION}")
    for key in ("model", "input", "output", "artifacts", "runtimes"):
        if key not in data:
            raise DeployError(f"{path}: missing '{key}'")
    for name, entry in data["artifacts"].items():
        for role in ("model_file", "params_file"):
            if entry.get(role) and not (model_dir / entry[role]).is_file():
                raise DeployError(f"{path}: artifact {name!r} names {entry[role]}, which is missing from {model_dir}")
    return DeployConfig(model_dir, data)
