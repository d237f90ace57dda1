"""torch module -> one self-contained ONNX graph (input "pixels", output "tokens") at a target's opset.

    torch.onnx.export(dynamo=True)  (torch.export + onnxscript, written at opset 18 and converted to the target's)
      | fails (data-dependent Python in some Hugging Face towers, e.g. Qwen2-VL's attention split)
      v
    torch.onnx.export(dynamo=False) (TorchScript tracing at the target's opset) + onnxslim (folds what tracing left)
      | fails
      v
    ModelError naming the operator and the layer (module path) where it ran

The exporters print progress on stdout and warn a lot: both are silenced, stdout carries only prosemc's data.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch

from prosemc.errors import ModelError
from prosemc.export.quiet import quiet

def export_onnx(module: torch.nn.Module, example: torch.Tensor, opset: int, what: str) -> tuple[Any, str]:
    """(onnx.ModelProto, exporter) of module (pixels [1, 3, H, W] -> tokens [N, D]) at `opset`.

    ModelError naming the operator and layer if both exporters fail.
    """
    import onnx

    failures: list[BaseException] = []
    with quiet():
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                        input_names=["pixels"], output_names=["tokens"], external_data=False)
            return _checked(program.model_proto, opset), "torch.onnx dynamo"
        except Exception as error:  # noqa: BLE001 - any exporter failure: try the other exporter
            failures.append(error)
        try:
            import onnxslim

            buffer = io.BytesIO()
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=["pixels"], output_names=["tokens"], do_constant_folding=True)
            return _checked(onnxslim.slim(onnx.load_from_string(buffer.getvalue())), opset), "torch.onnx torchscript + onnxslim"
        except Exception as error:  # noqa: BLE001
            failures.append(error)
    raise ModelError(describe_failure(module, example, failures, what))


def _checked(graph: Any, opset: int) -> Any:
    """The graph at `opset`, once onnx's checker and an onnxruntime session accept it (some pass only one)."""
    import onnx
    import onnxruntime

    if next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")) != opset:
        graph = onnx.version_converter.convert_version(graph, opset)
    onnx.checker.check_model(graph)
    onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return graph


_OPERATOR_PATTERNS = (
    re.compile(r"operator '?(aten::\w+|[\w.]+::\w+)'?"),
    re.compile(r"\b(aten[.:]{1,2}\w+)"),
)


def describe_failure(module: torch.nn.Module, example: torch.Tensor, failures: list[BaseException], what: str) -> str:
    """One line: which operator could not be exported, in which layer (module path), and what to do."""
    text = "\n".join(f"{error}" for error in reversed(failures))  # the TorchScript exporter names operators best
    operator = next((m.group(1) for pattern in _OPERATOR_PATTERNS for m in [pattern.search(text)] if m), None)
    layer = None
    if operator is not None:
        name = operator.replace("::", ".").split(".")[1]
        layer = layer_running(module, example, name)
    reason = next((line.strip() for line in str(failures[-1]).splitlines() if line.strip()), type(failures[-1]).__name__)
    where = f"operator {operator}" if operator else "an operator"
    where += f" in layer {layer!r}" if layer else ""
    return (f"cannot export {what} to ONNX: {where} has no ONNX equivalent in either exporter ({reason[:200]}); "
            "replace that operation in the model, or export another model")


def layer_running(module: torch.nn.Module, example: torch.Tensor, operator: str) -> str | None:
    """The path of the innermost submodule that first runs aten operator `operator` on `example` (None if none)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    stack: list[str] = []
    found: list[str] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if not found and func.__name__.split(".")[0].lstrip("_") == operator.lstrip("_"):
                found.append(stack[-1] if stack else "<top level>")
            return func(*args, **(kwargs or {}))

    def enter(name: str) -> Any:
        return lambda _module, _args: stack.append(name or "<top level>")  # returns None: inputs unchanged

    def leave(_module: Any, _args: Any, _output: Any) -> None:
        stack.pop()

    handles = []
    for name, child in module.named_modules():
        handles += [child.register_forward_pre_hook(enter(name)), child.register_forward_hook(leave)]
    try:
        with torch.inference_mode(), Recorder(), quiet():
            module(example)
    except Exception:  # noqa: BLE001 - only used to name the layer
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None
