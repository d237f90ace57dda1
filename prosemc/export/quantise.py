"""Static int8 quantisation of an fp32 graph with onnxruntime's tools, plus per-conv bias correction.

    fp32 graph --quantize_static (QDQ, int8 weights and activations, calibration over unlabeled photos)--> int8 graph
    bias correction (convolutions): the int8 weights W_q of each conv shift its output mean by
        e_c = mean over images and positions of conv(x, W_q - W)_c,   x = the conv's input in the int8 graph
    and b_c -= e_c cancels it. "one-pass" measures every conv's input in one run of the uncorrected int8 graph;
    "sequential" corrects conv by conv in graph order, each measured after the corrections before it (what the
    issue's experiment did). The corrected biases go into the fp32 graph, which is then quantised again, so
    onnxruntime's own code quantises the biases (int32) and the graph runs on its int8 kernels.

Error mean estimates and int8 numerics use onnxruntime with graph optimisations off (exact QDQ arithmetic).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from prosemc.errors import ModelError
from prosemc.export.quiet import quiet
from prosemc.export.targets import QuantScheme


def _reader(pixels: Sequence[np.ndarray]) -> Any:
    """An onnxruntime CalibrationDataReader over pixel arrays [1, 3, H, W]."""
    from onnxruntime.quantization import CalibrationDataReader

    class PixelReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(pixels)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {"pixels": item}

    return PixelReader()


def quantise_static(graph: Any, pixels: Sequence[np.ndarray], scheme: QuantScheme, quantise_bias: bool = True) -> Any:
    """graph (onnx.ModelProto, fp32) as a QDQ int8 graph calibrated on `pixels`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="prosemc-quantise-") as work, quiet():
        source, target = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        onnx.save(graph, source)
        try:
            quantize_static(
                str(source), str(target), _reader(pixels), quant_format=QuantFormat.QDQ,
                per_channel=scheme.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[scheme.calibration],
                extra_options={"WeightSymmetric": scheme.weight_symmetric,
                               "ActivationSymmetric": scheme.activation_symmetric, "QuantizeBias": quantise_bias},
            )
        except Exception as error:  # noqa: BLE001 - onnxruntime's tools raise many types
            raise ModelError(f"onnxruntime could not quantise the graph ({str(error).splitlines()[0]}); "
                             "export with --precision fp32") from None
        return onnx.load(str(target))


def quantise(graph: Any, pixels: Sequence[np.ndarray], scheme: QuantScheme,
             progress: Callable[[str], None] = lambda _: None) -> Any:
    """The int8 graph of an fp32 graph: calibration, then (per scheme) bias correction and a final quantisation."""
    if scheme.bias_correction == "none":
        progress("quantising (int8)")
        return quantise_static(graph, pixels, scheme)
    progress("quantising (int8, float biases)")
    draft = quantise_static(graph, pixels, scheme, quantise_bias=False)
    progress(f"bias correction ({scheme.bias_correction})")
    biases = corrected_biases(graph, draft, pixels, sequential=scheme.bias_correction == "sequential")
    progress("quantising (int8, corrected biases)")
    return quantise_static(with_initializers(graph, biases), pixels, scheme)


def with_initializers(graph: Any, values: dict[str, np.ndarray]) -> Any:
    """A copy of graph with the named initializers replaced by values."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    for initializer in copy.graph.initializer:
        if initializer.name in values:
            initializer.CopyFrom(numpy_helper.from_array(values[initializer.name].astype(np.float32), initializer.name))
    return copy


def _dequantised_weight(draft: Any, name: str) -> np.ndarray:
    """The float weight a DequantizeLinear node named by its output `name` feeds its conv: scale * (q - zero)."""
    from onnx import helper, numpy_helper

    node = next(n for n in draft.graph.node if name in n.output)
    constants = {i.name: numpy_helper.to_array(i) for i in draft.graph.initializer if i.name in node.input}
    quantised = constants[node.input[0]].astype(np.float32)
    scale = constants[node.input[1]].astype(np.float32)
    zero = constants[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * quantised.ndim
    shape[axis] = -1
    if scale.ndim:
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (quantised - zero) * scale


def _error_session(node: Any, weight_error: np.ndarray) -> Any:
    """An onnxruntime session computing conv(x, W_q - W) with the node's attributes, for inputs x [B, C, H, W]."""
    from onnx import TensorProto, helper, numpy_helper

    from prosemc.export.bundle import inference_session

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    conv = helper.make_node("Conv", ["x", "dw"], ["y"], **attributes)
    graph = helper.make_graph([conv], "weight_error", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight_error.astype(np.float32), "dw")])
    return inference_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def corrected_biases(graph: Any, draft: Any, pixels: Sequence[np.ndarray], sequential: bool) -> dict[str, np.ndarray]:
    """Conv bias name -> bias [C] that cancels the mean output shift caused by that conv's int8 weights.

    graph: the fp32 graph; draft: its QDQ graph with float biases (quantise_static(..., quantise_bias=False)).
    """
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    fp32_weights = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    fp32_convs = {n.name: n for n in graph.graph.node if n.op_type == "Conv"}
    draft_constants = {i.name: numpy_helper.to_array(i) for i in draft.graph.initializer}
    dequantised = {output for n in draft.graph.node if n.op_type == "DequantizeLinear" for output in n.output}
    convs = []  # (input name, bias name, weight error session), graph order
    for node in draft.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in draft_constants \
                or node.input[1] not in dequantised:  # a conv left in float has no weight rounding to correct
            continue
        original = fp32_convs.get(node.name)
        if original is None or original.input[1] not in fp32_weights:
            continue
        error = _dequantised_weight(draft, node.input[1]) - fp32_weights[original.input[1]]
        convs.append((node.input[0], node.input[2], _error_session(node, error)))
    if not convs:
        return {}

    probe = onnx.ModelProto()
    probe.CopyFrom(draft)
    for input_name, bias_name, _ in convs:  # biases become feedable inputs, conv inputs become outputs
        probe.graph.input.append(helper.make_tensor_value_info(bias_name, TensorProto.FLOAT,
                                                               list(draft_constants[bias_name].shape)))
        probe.graph.output.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    biases = {bias: draft_constants[bias].astype(np.float64) for _, bias, _ in convs}

    def mean_error(index: int, conv_input: np.ndarray) -> np.ndarray:
        (shift,) = convs[index][2].run(None, {"x": conv_input})
        return shift.mean(axis=(0, 2, 3), dtype=np.float64)

    def feeds(image: np.ndarray) -> dict[str, np.ndarray]:
        return {"pixels": image, **{name: value.astype(np.float32) for name, value in biases.items()}}

    if sequential:
        for index, (input_name, bias_name, _) in enumerate(convs):
            errors = [mean_error(index, session.run([input_name], feeds(image))[0]) for image in pixels]
            biases[bias_name] -= np.mean(errors, axis=0)
    else:
        names = [input_name for input_name, _, _ in convs]
        totals = [np.zeros_like(biases[bias]) for _, bias, _ in convs]
        start = feeds(pixels[0])
        for image in pixels:
            outputs = session.run(names, {**start, "pixels": image})
            for index, conv_input in enumerate(outputs):
                totals[index] += mean_error(index, conv_input)
        for (_, bias_name, _), total in zip(convs, totals):
            biases[bias_name] -= total / len(pixels)
    return {name: value.astype(np.float32) for name, value in biases.items()}
