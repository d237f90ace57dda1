"""Export target profiles (`export/*.toml`, shipped as prosemc/data/targets): opset, shapes, quantisation, NPU ops.

    load_target("imx95") -> TargetProfile   (or a path to a profile of your own)
    placement(graph, profile) -> [{"operator": "Conv", "count": 49, "runs_on": "npu"}, ...]

A profile is data: which ONNX opset and quantisation scheme the target wants, and which operator types its
accelerator runs; everything else falls back to its CPU. No torch.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prosemc.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRECISIONS = ("int8", "fp32")


@dataclass(frozen=True)
class QuantScheme:
    """Static int8 quantisation as onnxruntime's tools apply it (QDQ format)."""

    per_channel: bool
    weight_symmetric: bool
    activation_symmetric: bool
    calibration: str  # "minmax" | "percentile" | "entropy"
    bias_correction: str  # "one-pass" | "sequential" | "none"

    def describe(self) -> dict[str, Any]:
        """The manifest's "quantisation" entry."""
        return {
            "format": "QDQ",
            "weights": f"int8 {'symmetric' if self.weight_symmetric else 'asymmetric'} "
                       f"{'per-channel' if self.per_channel else 'per-tensor'}",
            "activations": f"int8 {'symmetric' if self.activation_symmetric else 'asymmetric'} per-tensor",
            "calibration": self.calibration,
            "bias_correction": self.bias_correction,
        }


@dataclass(frozen=True)
class TargetProfile:
    """One export target: graph settings, the default precision, quantisation, and the accelerator's operators."""

    name: str
    description: str
    precision: str
    opset: int
    quantisation: QuantScheme
    accelerator: str | None
    accelerator_operators: frozenset[str]
    folded_operators: frozenset[str]
    sources: tuple[dict[str, str], ...]
    path: str


def targets_folder() -> Path:
    """Where the shipped profiles live (the repository's export/ folder, packaged as prosemc/data/targets)."""
    return Path(str(resources.files("prosemc").joinpath("data/targets")))


def known_targets() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(path.stem for path in targets_folder().glob("*.toml"))


def load_target(name: str) -> TargetProfile:
    """The profile called `name` (a shipped one) or at path `name` (*.toml); InputError listing the known ones."""
    path = Path(name) if name.endswith(".toml") else targets_folder() / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"unknown target {name!r}; choose one of: {', '.join(known_targets())} "
                         "(or pass the path of a profile .toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        target, graph, quant = data["target"], data["graph"], data["quantisation"]
        accelerator = data.get("accelerator", {})
        scheme = QuantScheme(
            per_channel=quant["weight_granularity"] == "per-channel",
            weight_symmetric=bool(quant["weight_symmetric"]),
            activation_symmetric=bool(quant["activation_symmetric"]),
            calibration=str(quant["calibration"]),
            bias_correction=str(quant["bias_correction"]),
        )
        profile = TargetProfile(
            name=str(target["name"]), description=str(target["description"]), precision=str(target["precision"]),
            opset=int(graph["opset"]), quantisation=scheme, accelerator=target.get("accelerator"),
            accelerator_operators=frozenset(accelerator.get("operators", [])),
            folded_operators=frozenset(accelerator.get("folded", [])),
            sources=tuple(dict(source) for source in data.get("sources", [])), path=str(path),
        )
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"target profile {path} is not valid ({error!r}); fix it or use a shipped target") from None
    if profile.precision not in PRECISIONS or scheme.calibration not in ("minmax", "percentile", "entropy") \
            or scheme.bias_correction not in ("one-pass", "sequential", "none") or not 13 <= profile.opset <= 21:
        raise InputError(f"target profile {path}: precision, calibration, bias_correction or opset out of range")
    return profile


def placement(graph: Any, profile: TargetProfile) -> list[dict[str, Any]]:
    """Per operator type of an onnx.ModelProto: how many nodes, and where they run ("npu", "cpu" or "folded")."""
    counts = Counter(node.op_type for node in graph.graph.node)
    rows = []
    for operator, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if operator in profile.folded_operators:
            where = "folded"
        elif operator in profile.accelerator_operators:
            where = "npu"
        else:
            where = "cpu"
        rows.append({"operator": operator, "count": count, "runs_on": where})
    return rows
