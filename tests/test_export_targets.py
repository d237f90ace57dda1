"""Target profiles (export/*.toml) and the portable ANS coder the edge falls back to without constriction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from prosemc.codec import make_codec
from prosemc.codec.ans_portable import PortableAnsCoder
from prosemc.errors import InputError
from prosemc.export.targets import known_targets, load_target, placement
from prosemc.models.images import load_image
from prosemc.models.lite import LiteModel


def test_shipped_profiles_load():
    assert known_targets() == ["cpu", "imx95"]
    imx95, cpu = load_target("imx95"), load_target("cpu")
    assert imx95.precision == "int8" and cpu.precision == "fp32" and imx95.opset == cpu.opset == 17
    assert imx95.quantisation.per_channel and imx95.quantisation.weight_symmetric
    assert imx95.quantisation.bias_correction == "one-pass"
    assert {"Conv", "Add", "Clip"} <= imx95.accelerator_operators and not cpu.accelerator_operators
    assert all(source["url"].startswith("https://") for source in imx95.sources) and len(imx95.sources) >= 3


def test_placement_per_operator_type():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Conv", ["y", "w"], ["z"]),
             helper.make_node("Erf", ["z"], ["e"]), helper.make_node("QuantizeLinear", ["e", "s"], ["q"])]
    graph = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                                [helper.make_tensor_value_info("q", TensorProto.INT8, None)]))
    assert placement(graph, load_target("imx95")) == [
        {"operator": "Conv", "count": 2, "runs_on": "npu"},
        {"operator": "Erf", "count": 1, "runs_on": "cpu"},
        {"operator": "QuantizeLinear", "count": 1, "runs_on": "folded"},
    ]
    assert {row["runs_on"] for row in placement(graph, load_target("cpu"))} == {"cpu"}


def test_unknown_and_broken_profiles(tmp_path):
    with pytest.raises(InputError, match=r"unknown target 'imx8'; choose one of: cpu, imx95"):
        load_target("imx8")
    broken = tmp_path / "board.toml"
    broken.write_text('[target]\nname = "board"\n')
    with pytest.raises(InputError, match=r"board.toml is not valid"):
        load_target(str(broken))
    own = tmp_path / "own.toml"
    own.write_text(Path(load_target("cpu").path).read_text().replace('name = "cpu"', 'name = "own"'))
    assert load_target(str(own)).name == "own"


def test_portable_coder_writes_constriction_bytes_for_every_lite_layer(chelsea):
    tokens = LiteModel().encode_image(load_image(str(chelsea))).tokens
    native, portable = make_codec("metaae"), make_codec("metaae")
    portable.coder = PortableAnsCoder()
    assert native.coder.implementation == "constriction" and portable.coder.implementation == "portable"
    encoded = native.encode(tokens)
    assert portable.encode(tokens).layers == encoded.layers and len(encoded.layers) == 6
    for k in (1, 6):
        np.testing.assert_array_equal(portable.decode(encoded.params, encoded.layers[:k], tokens.shape),
                                      native.decode(encoded.params, encoded.layers[:k], tokens.shape))
