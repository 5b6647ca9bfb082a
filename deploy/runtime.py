"""Run exported artifacts: Paddle Inference and ONNX Runtime predictors, ``predict(x) -> probs``.

Paddle Inference on CPU (paddle 3.3.1), measured here; deploy/README.md has the numbers:

* legacy ``model.pdmodel`` + ``enable_mkldnn()`` (oneDNN placement of every op, conv+BN+ReLU and
  conv+add fusion), IR optimisation and memory optimisation on: the default, fastest and
  correct for every model;
* PIR ``model.json`` + oneDNN: every interpolate fails in the oneDNN placement
  (``ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]``),
  so the placement pass is deleted: the oneDNN fusion passes still turn convolutions into
  ``onednn_op.fused_conv2d``, the rest runs on plain CPU kernels with layout conversions in
  between (slower than legacy, faster than no oneDNN). Without the placement pass,
  ``operator_reshape_onednn_fuse_pass`` must go too: it fuses transpose + reshape (swin_t_upernet's
  window partition and attention output) into ``fused_transpose``, an op that exists only in the
  oneDNN dialect, and the predictor then fails to build (``Ctx should have corresponding OpInfo
  pd_op.fused_transpose``). ``enable_memory_optim`` fails on PIR
  programs in 3.3.1 (``Not find predictor_id 0 and pass_name memory_optimize_pass``), so it is
  left off there;
* oneDNN off: plain CPU kernels, about 3x slower;
* legacy ``model.pdmodel`` + ``enable_openvino_engine(Float32)``: Paddle Inference hands the
  graph to the OpenVINO CPU plugin shipped inside the paddlepaddle wheel (fp32, the thread
  count is respected). It fails on PIR programs (the same oneDNN attribute error).

OpenVINO (the ``openvino`` wheel, its CPU plugin) runs the ONNX files directly, in fp32, bf16
(``INFERENCE_PRECISION_HINT``) or int8 (the QDQ model of deploy/quantize.py). Its CPU plugin picks
the instructions itself (AMX where present, else AVX512_BF16 / VNNI). Its default precision hint
is bf16 on any CPU with AVX512_BF16: fp32 is therefore always asked for explicitly.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


ENGINES = ("onednn", "native", "openvino")


class PaddlePredictor:
    """A Paddle Inference predictor on CPU.

    Args:
        model_file, params_file: ``.pdmodel`` (legacy) or ``.json`` (PIR) and ``.pdiparams``.
        threads: math library threads.
        engine: ``onednn`` (oneDNN on), ``native`` (oneDNN off) or ``openvino`` (legacy only);
            see the module docstring for what each means per format.
    """

    def __init__(self, model_file: Path, params_file: Path, threads: int = 2, engine: str = "onednn",
                 precision: str = "fp32"):
        from paddle import inference

        if engine not in ENGINES:
            raise ValueError(f"unknown Paddle Inference engine {engine!r}; known: {', '.join(ENGINES)}")
        self.pir = str(model_file).endswith(".json")
        config = inference.Config(str(model_file), str(params_file))
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(threads)
        config.switch_ir_optim(True)
        if engine == "onednn":
            config.enable_mkldnn()
            if self.pir:
                config.delete_pass("onednn_placement_pass")
                config.delete_pass("operator_reshape_onednn_fuse_pass")  # its fused op needs the placement
            if precision == "bf16":
                # measured, not offered by deploy/infer.py (deploy/precision.py): with every op in
                # bf16 factseg50 fails (an elementwise_add gets a bf16 tensor); convolutions only run
                config.enable_mkldnn_bfloat16()
                config.set_bfloat16_op({"conv2d", "fused_conv2d"})
        elif engine == "openvino":
            # the engine caches its compiled model (~0.25 GB for factseg50) in ./__cache__ unless
            # told otherwise: a private temporary folder, removed with this predictor
            self._cache = tempfile.TemporaryDirectory(prefix="rsport-openvino-")
            config.set_optim_cache_dir(self._cache.name)
            config.enable_openvino_engine(inference.PrecisionType.Float32)
        else:
            config.disable_mkldnn()
        if not self.pir:
            config.enable_memory_optim()
        self.predictor = inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output_name = self.predictor.get_output_names()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        self.input.reshape(list(x.shape))
        self.input.copy_from_cpu(x)
        self.predictor.run()
        return self.predictor.get_output_handle(self.output_name).copy_to_cpu()


class OrtPredictor:
    """An ONNX Runtime CPU session (deploy/onnx_tools.py ``session``)."""

    def __init__(self, model_file: Path, threads: int = 2):
        from deploy.onnx_tools import session

        self.session = session(model_file, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


class OpenVINOPredictor:
    """An OpenVINO CPU compiled model of an ONNX file.

    Args:
        model_file: ``.onnx`` (fp32, or the int8 QDQ model).
        threads: inference threads (one stream, latency mode).
        precision: ``fp32`` or ``bf16``: the inference precision of the non-quantized operations
            (``INFERENCE_PRECISION_HINT`` f32 / bf16). The int8 model runs with ``fp32``.
    """

    HINTS = {"fp32": "f32", "bf16": "bf16"}

    def __init__(self, model_file: Path, threads: int = 2, precision: str = "fp32"):
        import openvino as ov

        if precision not in self.HINTS:
            raise ValueError(f"OpenVINO precision hint {precision!r}; known: {', '.join(self.HINTS)}")
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", {
            "INFERENCE_PRECISION_HINT": self.HINTS[precision], "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return self.request.get_output_tensor(0).data.copy()


# deploy.yaml ``runtime`` of an artifact -> the backends (deploy/infer.py --backend) that run it
BACKENDS = {"paddle": ("paddle", "paddle_openvino"), "onnxruntime": ("onnxruntime", "openvino")}


def for_artifact(root: Path, entry: dict, threads: int = 2, engine: str = "onednn", backend: str | None = None,
                 precision: str = "fp32"):
    """The predictor of one ``deploy.yaml`` artifact entry.

    Args:
        root: the model directory.
        entry: the artifact entry (``runtime``, ``model_file``, ...).
        threads: math threads.
        engine: Paddle Inference only: ``onednn``, ``native`` or ``openvino``.
        backend: ``openvino`` runs an ONNX artifact in OpenVINO instead of ONNX Runtime.
        precision: OpenVINO: ``fp32`` or ``bf16`` inference precision; Paddle Inference with
            oneDNN: ``bf16`` convolutions (benchmark only).
    """
    model_file = root / entry["model_file"]
    if entry["runtime"] == "paddle":
        return PaddlePredictor(model_file, root / entry["params_file"], threads, engine)
    if backend == "openvino":
        return OpenVINOPredictor(model_file, threads, "bf16" if precision == "bf16" else "fp32")
    return OrtPredictor(model_file, threads)
