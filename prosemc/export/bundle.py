"""The torch-free edge runner: an exported bundle run with onnxruntime and the numpy codec.

    image --PixelRecipe--> pixels [1, 3, H, W] --encoder.onnx (onnxruntime)--> tokens [N, D]
          --codec (metaae weights from the bundle, or baseline)--> layers --PsemWriter--> .psem stream

    bundle = EdgeBundle.load("edge/")                  # checks manifest.json and every file's sha256
    bundle.encode_image(image, out, max_bytes=2000)    # the same .psem bytes as prosemc.pipeline.encode_image

Imports numpy, Pillow, onnxruntime and safetensors only: never torch, transformers or rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from prosemc.codec import Codec, make_codec
from prosemc.errors import InputError, ModelError, ProsemcError
from prosemc.export.manifest import read_manifest
from prosemc.export.pixels import PixelRecipe
from prosemc.export.session_cache import cached_session
from prosemc.models.base import Answer, EdgeTokens
from prosemc.pipeline import EncodeReport, encode_image

# x86 onnxruntime without VNNI saturates u8 x s8 products in its default int8 kernels; this option makes it
# compute what aarch64 onnxruntime computes (ignored elsewhere), so parity measured here is the board's.
BOARD_NUMERICS = {"session.x64quantprecision": "1"}


def inference_session(model: str | bytes | Path, threads: int | None = None, *, save_optimised: Path | None = None,
                      preoptimised: bool = False) -> Any:
    """An onnxruntime CPU session with the board's int8 numerics on `threads` (None: prosemc.runtime's default).

    save_optimised: also write onnxruntime's optimised graph there; preoptimised: the graph is such a file, so
    it runs as it is (see prosemc.export.session_cache)."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed; install the edge runtime with pip install 'prosemc[edge]'") from None
    from prosemc.runtime import onnx_session_options

    options = onnx_session_options(threads)
    options.log_severity_level = 4  # onnxruntime logs only fatal errors: failures become one-line ModelErrors here
    for key, value in BOARD_NUMERICS.items():
        options.add_session_config_entry(key, value)
    if preoptimised:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_optimised is not None:
        options.optimized_model_filepath = str(save_optimised)
    source = str(model) if isinstance(model, Path) else model
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first_error = error
    # Some x86 builds fail to apply the x64 precision rewrite to int8 MatMuls ("Attempt to replace the existing
    # tensor"); without graph optimisations the QDQ graph runs as written, which is also the board's arithmetic.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = ""
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - report the first, more telling error
        reason = str(first_error).splitlines()[0]
        raise ModelError(f"onnxruntime cannot load the graph ({reason}); re-export the bundle") from None


@dataclass
class OnnxVisionEncoder:
    """The edge half of a model as an ONNX graph: image -> EdgeTokens(tokens [N, D] float32, the manifest's info)."""

    model_id: str
    session: Any
    recipe: PixelRecipe
    token_shape: tuple[int, int]
    info: dict[str, Any]
    runtime: str = "onnxruntime"  # what runs the edge half (prosemc.pipeline.EncodeReport.runtime)

    def tokens(self, pixels: np.ndarray) -> np.ndarray:
        """Tokens [N, D] float32 of pixels [1, 3, H, W] float32 (0..255)."""
        expected = (1, 3, self.recipe.height, self.recipe.width)
        if pixels.shape != expected:
            raise InputError(f"the bundle takes pixels {list(expected)}, got {list(pixels.shape)}")
        try:
            (tokens,) = self.session.run(["tokens"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        except Exception as error:
            raise ModelError(f"the bundle's graph failed on this image ({str(error).splitlines()[0]}); "
                             "re-export the bundle") from None
        if tokens.shape != self.token_shape:
            raise ModelError(f"the bundle's graph gave tokens {list(tokens.shape)}, its manifest says "
                             f"{list(self.token_shape)}; re-export the bundle")
        return tokens.astype(np.float32, copy=False)

    def encode_image(self, image: Any) -> EdgeTokens:
        """Edge half on an RGB PIL image, as prosemc.models.base.VisionLanguageModel.encode_image."""
        return EdgeTokens(self.tokens(self.recipe.pixels(image)), dict(self.info))

    def answer(self, tokens: EdgeTokens, question: str) -> Answer:
        raise ModelError("an edge bundle holds only the edge half; answer with `prosemc query` on the cloud")


class EdgeBundle:
    """A checked bundle folder: its manifest, vision encoder session and codec."""

    def __init__(self, folder: Path, manifest: dict[str, Any], vision: OnnxVisionEncoder, codec: Codec) -> None:
        self.folder = folder
        self.manifest = manifest
        self.vision = vision
        self.codec = codec

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, cache: bool = True) -> "EdgeBundle":
        """Check manifest.json and every file's sha256, then load the graph and the codec; ModelError otherwise.

        cache: keep onnxruntime's optimised graph in the prosemc cache and start from it next time
        (prosemc.export.session_cache)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        try:
            recipe = PixelRecipe.from_json(manifest["input"]["recipe"])
            token_shape = tuple(int(v) for v in manifest["tokens"]["shape"])
            model_id, info = str(manifest["model"]["id"]), dict(manifest["model"].get("info", {}))
            graph_file, codec_entry = str(manifest["graph"]["file"]), manifest["codec"]
            codec_name = str(codec_entry["name"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{folder / 'manifest.json'} is incomplete ({error!r}); re-export the bundle") from None
        graph_sha256 = manifest["files"].get(graph_file)
        if not isinstance(graph_sha256, str):
            raise ModelError(f"{folder / 'manifest.json'} does not list the sha256 of its graph {graph_file}; "
                             "re-export the bundle")
        if len(token_shape) != 2:
            raise ModelError(f"the bundle's tokens are {list(token_shape)}; prosemc codes [N, D] tokens only")
        graph = folder / graph_file
        if cache:
            from prosemc.models.llm import cache_root

            session = cached_session(graph, graph_sha256, BOARD_NUMERICS, cache_root(),
                                     lambda source, save, ready: inference_session(source, threads, save_optimised=save,
                                                                                   preoptimised=ready))
        else:
            session = inference_session(graph, threads)
        weights = codec_entry.get("file")
        try:
            codec = make_codec(codec_name, weights=folder / weights) if weights else make_codec(codec_name)
        except ProsemcError as error:
            raise ModelError(f"the bundle's codec cannot be loaded ({error})") from None
        vision = OnnxVisionEncoder(model_id, session, recipe, token_shape, info)  # type: ignore[arg-type]
        return cls(folder, manifest, vision, codec)

    @property
    def model_id(self) -> str:
        """The model id every .psem this bundle writes names as its "encoder"."""
        return self.vision.model_id

    def encode_image(self, image: Any, out: BinaryIO, *, max_layers: int | None = None, max_bytes: int | None = None,
                     compact: bool = False) -> EncodeReport:
        """Encode an RGB PIL image into a .psem stream (full or compact form), as prosemc.pipeline.encode_image."""
        return encode_image(image, out, self.vision, codec=self.codec, max_layers=max_layers, max_bytes=max_bytes,
                            compact=compact)
