"""ONNX graph rewrite and ONNX Runtime sessions shared by export, inference and benchmarks.

The one rewrite: ``Softmax`` over the class axis of an NCHW map becomes ReduceMax, Sub, Exp,
ReduceSum, Div. ONNX Runtime (1.31, CPU) runs Softmax on a non-last axis by transposing the
whole map to put that axis last and back: measured on factseg50 at 896x896 (2 threads), the one
Softmax took 0.87 s of 5.3 s, the decomposed form 0.09 s. The decomposition is the definition of
softmax with the usual max shift; export checks the rewritten graph against the dynamic model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _reduce(helper, numpy_helper, graph, op: str, x: str, out: str, axis: int, opset: int, prefix: str):
    """A keepdims reduction over ``axis`` (axes as an input from opset 18 / 13 for ReduceSum)."""
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)  # ReduceMax takes axes as input from 18
    if axes_as_input:
        name = f"{prefix}{op}_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), name))
        return helper.make_node(op, [x, name], [out], keepdims=1)
    return helper.make_node(op, [x], [out], axes=[axis], keepdims=1)


def decompose_channel_softmax(path: Path) -> int:
    """Rewrite, in place, every Softmax over axis 1; returns how many were rewritten. Only for
    opset >= 13 (before 13, Softmax's axis flattened the trailing dimensions: another op)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph, opset = model.graph, _opset(model)
    if opset < 13:
        return 0
    nodes, count = [], 0
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if node.op_type != "Softmax" or axis != 1:
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], f"channel_softmax{count}_"
        nodes += [
            _reduce(helper, numpy_helper, graph, "ReduceMax", x, p + "max", axis, opset, p),
            helper.make_node("Sub", [x, p + "max"], [p + "shifted"]),
            helper.make_node("Exp", [p + "shifted"], [p + "exp"]),
            _reduce(helper, numpy_helper, graph, "ReduceSum", p + "exp", p + "sum", axis, opset, p),
            helper.make_node("Div", [p + "exp", p + "sum"], [y]),
        ]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return count


def session(path: Path, threads: int = 2):
    """An ONNX Runtime CPU session: all graph optimizations (incl. the NCHWc layout transformer),
    ``threads`` intra-op threads, sequential execution, one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings about initializers paddle2onnx leaves unused
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
