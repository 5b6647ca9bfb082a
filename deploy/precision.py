"""Numeric precision of a deployed model: which backend runs which precision, and on which ISA.

Precision is a property of an exported artifact plus the backend that runs it
(deploy/export.py ``--precision``, deploy/infer.py and deploy/benchmark.py ``--precision``):

=========== ======================================= =============================================
precision   backend (deploy/infer.py ``--backend``)  what runs
=========== ======================================= =============================================
fp32        paddle, paddle_openvino, onnxruntime,    the fp32 artifacts (deploy/README.md)
            openvino
bf16        openvino                                 the fp32 ONNX with OpenVINO's
                                                     ``INFERENCE_PRECISION_HINT=bf16`` (bf16
                                                     products, fp32 accumulation; AMX tiles where
                                                     the CPU has them, AVX512_BF16 otherwise)
int8        onnxruntime, openvino                    ``model_int8.onnx``: static QDQ quantization
                                                     (per-channel int8 weights, uint8 activations
                                                     calibrated on training windows); ONNX Runtime
                                                     runs it as QLinearConv (VNNI), OpenVINO as
                                                     low-precision convolutions (VNNI / AMX-INT8)
=========== ======================================= =============================================

Measured and dropped (deploy/README.md has the numbers): ONNX Runtime has no bf16 convolution
on CPU; Paddle Inference's oneDNN bf16 crashes on factseg50 with every op placed in bf16 (an
``elementwise_add`` receives a bf16 tensor) and, with convolutions only, is far slower than
OpenVINO's bf16; Paddle int8 needs a PaddleSlim-quantized program (not a dependency here).

ISA. A reduced precision is only worth running where the CPU has instructions for it; the flags
come from ``/proc/cpuinfo`` (Linux) at run time, because the machine can change between runs.
"""
from __future__ import annotations

import platform
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "int8")
# backend -> precisions it runs (deploy/infer.py --backend)
SUPPORT = {"paddle": ("fp32",), "paddle_openvino": ("fp32",), "onnxruntime": ("fp32", "int8"),
           "openvino": ("fp32", "bf16", "int8")}
# precision -> CPU flags that execute it natively, fastest first; any one is enough.
ISA = {"bf16": ("amx_bf16", "avx512_bf16"), "int8": ("amx_int8", "avx512_vnni", "avx_vnni")}
ISA_NAMES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512_BF16", "amx_int8": "AMX-INT8",
             "avx512_vnni": "AVX512_VNNI", "avx_vnni": "AVX_VNNI"}
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


class PrecisionError(Exception):
    """A precision the backend or the CPU cannot run: one line for ``error: ...``."""


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict:
    """``{"model": name, "flags": sorted flag list}`` of the first CPU (empty flags off Linux)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown CPU", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": sorted(flags)}


def isa_report(flags) -> dict:
    """The reduced-precision flags present, and per precision the path that will run."""
    flags = set(flags)
    return {"flags": [f for f in REPORTED_FLAGS if f in flags],
            "paths": {p: isa_path(p, flags) for p in ISA}}


def isa_path(precision: str, flags) -> str | None:
    """The name of the fastest instruction set for ``precision`` on a CPU with ``flags``
    (``"AVX512_BF16"``, ``"AMX-INT8"``, ...), ``"fp32"`` for fp32, None if the CPU has none."""
    if precision == "fp32":
        return "fp32"
    found = [f for f in ISA[precision] if f in set(flags)]
    return ISA_NAMES[found[0]] if found else None


def check_backend(backend: str, precision: str) -> None:
    """PrecisionError unless ``backend`` runs ``precision`` at all (independent of the CPU)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision not in SUPPORT.get(backend, ()):
        runs = [f"{b} {p}" for b, ps in SUPPORT.items() for p in ps if p != "fp32"]
        raise PrecisionError(f"--backend {backend} has no {precision} on CPU ({backend} runs "
                             f"{', '.join(SUPPORT.get(backend, ()))}); reduced precision runs on: {', '.join(runs)}")


def check_isa(precision: str, flags=None) -> str:
    """The ISA path for ``precision``; PrecisionError naming the missing CPU flag if none."""
    if precision == "fp32":
        return "fp32"
    info = cpu_info() if flags is None else {"model": "this CPU", "flags": flags}
    path = isa_path(precision, info["flags"])
    if path is None:
        baseline, *others = reversed(ISA[precision])  # the most common flag first: avx512_bf16, avx_vnni
        raise PrecisionError(f"--precision {precision} needs the CPU flag {baseline} (or {' or '.join(others)}), "
                             f"missing on {info['model']}; --allow-fallback runs fp32 instead")
    return path
