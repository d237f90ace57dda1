"""`prosemc encode`, `decode` and `query`: the main job, edge and cloud halves, over files or pipes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import click

from prosemc.cli import cli, printable
from prosemc.cli.io import atomic_output, display_name, open_input
from prosemc.cli.options import threads_option
from prosemc.codec import codec_names
from prosemc.format.idle import DEFAULT_IDLE_TIMEOUT, can_stall

FILE = click.Path(dir_okay=False, allow_dash=True)


def _report(data: dict[str, Any], text: str, as_json: bool, to_stderr: bool) -> None:
    """Print a JSON report or a human line; to stderr when stdout carries data."""
    click.echo(json.dumps(data, sort_keys=True) if as_json else printable(text), err=to_stderr or not as_json)


CODEC_WEIGHTS_IN = click.option(
    "--codec-weights", type=click.Path(dir_okay=False), default=None,
    help="The metaae weights file that encoded IN, when prosemc does not ship it (the header names it by sha256).")
READ_TIMEOUT = click.option(
    "--read-timeout", type=click.FloatRange(min=0), default=DEFAULT_IDLE_TIMEOUT, show_default=True, metavar="SECONDS",
    help="Once bytes arrive on a pipe or socket, treat SECONDS without a byte as the end of the stream (the sender "
         "stalled) and use the complete layers so far; 0 waits for ever.")


@cli.command()
@click.argument("image", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="The .psem to write, or - for stdout (written atomically).")
@click.option("-m", "--model", default="lite", show_default=True,
              help="'lite' (built in, offline: EfficientNet-Lite0 head features [49, 1280]), 'lite-dense' (built in: "
                   "EfficientNet-Lite0 cut after stage 5, dense signed tokens [196, 112] that the cloud's stages 6-7 "
                   "consume) or a Hugging Face VLM id / local folder (LLaVA-1.5, SmolVLM, Qwen2-VL).")
@click.option("--codec", "codec_name", type=click.Choice(codec_names()), default=None,
              help="Token codec. Default: the best measured for the model -- 'metaae' (the trained Meta AutoEncoder: "
                   "mean-token levels for lite, per-token for lite-dense) where prosemc ships weights, else 'baseline' "
                   "(training-free, progressive, any model); raw-f32/raw-f16/int8 are single-layer references.")
@click.option("--codec-weights", type=click.Path(dir_okay=False), default=None,
              help="metaae weights file (from `prosemc fit`) for a model prosemc ships none for; implies --codec metaae.")
@click.option("--layers", type=click.IntRange(min=1), help="Write only the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Write the largest layer prefix of at most N bytes.")
@click.option("--compact", is_flag=True,
              help="Write the compact form: a short header (18 bytes for lite) naming the model + codec profile "
                   "instead of the ~250-byte full one, and 5-9 bytes of framing per layer instead of 16; for thin "
                   "links to a receiver that knows the profile (`prosemc profiles`).")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="Run an exported edge bundle (`prosemc export`) with onnxruntime instead of the torch model: no "
                   "torch needed (pip install 'prosemc[edge]'). The bundle fixes model and codec.")
@click.option("--json", "as_json", is_flag=True, help="Report sizes and timings as JSON (stderr when -o -).")
@threads_option
@click.pass_context
def encode(ctx: click.Context, image: str, output: str, model: str, codec_name: str | None, codec_weights: str | None,
           layers: int | None, max_bytes: int | None, compact: bool, bundle: str | None, as_json: bool) -> None:
    """Encode IMAGE (JPEG, PNG, WebP, BMP, GIF; or - for stdin) into a layered .psem.

    Runs the model's vision encoder (the edge half), compresses its tokens into progressive layers and
    writes them front to back, so the output can go straight into a pipe or socket. Images over 64 MiB,
    89 Mpx or an aspect ratio of 32:1 are refused.

    \b
      prosemc encode photo.jpg -o photo.psem
      prosemc encode photo.jpg -o - --max-bytes 2000 | nc cloud 9000
      prosemc encode photo.jpg -o - --compact --max-bytes 384 | nc cloud 9000
      prosemc encode --bundle edge/ cam.jpg -o - | nc cloud 9000      # on the board, without torch
    """
    from prosemc.errors import InputError
    from prosemc.models.images import load_image

    if bundle is not None:
        fixed = [f"--{name.replace('_name', '').replace('_', '-')}" for name in ("model", "codec_name", "codec_weights")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if fixed:
            raise InputError(f"{' and '.join(fixed)} cannot be combined with --bundle, which fixes model and codec; "
                             "export another bundle instead")
    with atomic_output(output, inputs=[image]) as out:  # checked now, created at the first byte
        start = time.perf_counter()
        with open_input(image) as stream:
            picture = load_image(stream if image == "-" else image)
        load_ms = (time.perf_counter() - start) * 1e3
        if bundle is not None:
            from prosemc.export.bundle import EdgeBundle

            report = EdgeBundle.load(bundle).encode_image(picture, out, max_layers=layers, max_bytes=max_bytes,
                                                          compact=compact)
        else:
            from prosemc.models import load_model
            from prosemc.pipeline import encode_image

            report = encode_image(picture, out, load_model(model), codec_name=codec_name, codec_weights=codec_weights,
                                  max_layers=layers, max_bytes=max_bytes, compact=compact)
    kept = report.layer_bytes[: report.layers_written]
    data = {
        "output": display_name(output, "<stdout>"), "model": report.model, "codec": report.codec,
        "entropy_coder": report.entropy_coder, "runtime": "onnxruntime" if bundle else "torch",
        "tokens": list(report.token_shape), "header_bytes": report.header_bytes, "layer_bytes": kept,
        "layers": report.layers_written, "layers_produced": len(report.layer_bytes), "bytes": report.bytes_written,
        "form": "compact" if compact else "full", "profile": report.profile_id,
        "timings_ms": {"load_image": round(load_ms, 2), **{k: round(v, 2) for k, v in report.timings_ms.items()}},
    }
    text = (f"{display_name(output, '<stdout>')}: {report.layers_written} of {len(report.layer_bytes)} layers, "
            f"{report.bytes_written} bytes (header {report.header_bytes}, layers {', '.join(map(str, kept))})"
            + (f", compact: needs profile {report.profile_id}" if compact else ""))
    _report(data, text, as_json, to_stderr=output == "-")
    if compact:
        from prosemc.cli.profiles import warn_if_unknown_profile

        warn_if_unknown_profile(report.profile_id)


@cli.command()
@click.argument("source", metavar="IN", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="safetensors file for the tokens (written atomically).")
@click.option("--layers", type=click.IntRange(min=1), help="Decode only the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Decode only the layer prefix within N file bytes.")
@CODEC_WEIGHTS_IN
@READ_TIMEOUT
@click.option("--json", "as_json", is_flag=True, help="Report what was decoded as JSON.")
@threads_option
def decode(source: str, output: str, layers: int | None, max_bytes: int | None, codec_weights: str | None,
           read_timeout: float,
           as_json: bool) -> None:
    """Decode a .psem (or the prefix of it that arrived) into tokens [N, D] float32 in a safetensors file.

    The tensor is named "tokens"; the file's metadata records the encoder, codec and layers used. A compact
    .psem needs its profile among `prosemc profiles`.
    """
    from safetensors.numpy import save

    from prosemc.pipeline import read_tokens

    with open_input(source) as stream, atomic_output(output, inputs=[source]) as out:
        decoded = read_tokens(stream, max_layers=layers, max_bytes=max_bytes, codec_weights=codec_weights,
                              idle_timeout=read_timeout or None)
        _warn_if_incomplete(decoded)
        meta = {"encoder": decoded.header.encoder, "codec": decoded.header.codec_id,
                "layers_used": str(decoded.layers_used), "info": json.dumps(decoded.edge.info, sort_keys=True)}
        out.write(save({"tokens": decoded.edge.tokens}, metadata=meta))
    data = {"output": display_name(output, "<stdout>"), "tokens": list(decoded.edge.tokens.shape),
            "layers_used": decoded.layers_used, "layers_declared": decoded.header.layers,
            "bytes_used": decoded.bytes_used, "encoder": decoded.header.encoder}
    _report(data, f"decoded {decoded.layers_used} layers -> {data['output']} tokens {data['tokens']}", as_json,
            to_stderr=output == "-")


def _warn_if_incomplete(decoded: Any) -> None:
    end = decoded.end
    stalled = f"the sender stalled (no byte for {decoded.stalled_after_s:g} s); " if decoded.stalled_after_s else ""
    if stalled or end.status != "complete" or decoded.layers_used < end.layers:
        click.echo(f"prosemc: {stalled}{end.describe()}; using {decoded.layers_used} layers ({decoded.bytes_used} "
                   "bytes)", err=True)


@cli.command()
@click.argument("source", metavar="IN", type=FILE)
@click.argument("question")
@click.option("-m", "--model", default=None,
              help="The model to answer with: the built-in 'lite' / 'lite-dense' the file names (the default), else the Hugging Face "
                   "checkpoint (hub id or folder) that encoded IN. A mismatch with the file is refused.")
@click.option("--layers", type=click.IntRange(min=1), help="Use only the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Use only the layer prefix within N file bytes.")
@CODEC_WEIGHTS_IN
@READ_TIMEOUT
@click.option("--json", "as_json", is_flag=True,
              help="Print answer, labels, layers_used, bytes_used, status, stalled, model and timings as one JSON "
                   "object.")
@threads_option
def query(source: str, question: str, model: str | None, layers: int | None, max_bytes: int | None,
          codec_weights: str | None, read_timeout: float, as_json: bool) -> None:
    """Answer QUESTION about the image in IN (a .psem file, or - for a pipe or socket).

    Decodes the complete layers that arrived (a cut or stalled stream still answers from them, and says so
    on stderr), rebuilds the visual tokens and runs the cloud half of the model on them. On a pipe or
    socket the model loads while the layers are still arriving. IN may be in the full or the compact form
    (whose profile must be among `prosemc profiles`).

    \b
      prosemc query photo.psem "what is shown?"
      prosemc encode cam.jpg -o - | ssh cloud prosemc query - "what is shown?"
    """
    from prosemc.errors import InputError
    from prosemc.pipeline import answer_report, read_tokens

    if not question.strip():
        raise InputError("the question is empty; ask something, e.g. \"what is shown?\"")
    start = time.perf_counter()
    with open_input(source) as stream:
        loader = _ModelLoader(model, question, background=can_stall(stream))  # a pipe or socket: load meanwhile
        decoded = read_tokens(stream, max_layers=layers, max_bytes=max_bytes, codec_weights=codec_weights,
                              idle_timeout=read_timeout or None, on_header=loader)
    decode_ms = (time.perf_counter() - start) * 1e3
    _warn_if_incomplete(decoded)
    start = time.perf_counter()
    answer = loader.ready().answer(decoded.edge, question)
    answer_ms = (time.perf_counter() - start) * 1e3
    data = answer_report(decoded, answer, {"read_decode": decode_ms, "answer": answer_ms})
    click.echo(json.dumps(data, sort_keys=True) if as_json else answer.text)


class _ModelLoader:
    """Resolves the answering model from the header as soon as it arrives and, when the layers are still coming
    over a pipe or socket, loads it (model.prepare) in a background thread meanwhile."""

    def __init__(self, requested: str | None, question: str, background: bool) -> None:
        self.requested, self.question, self.background = requested, question, background
        self.model: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __call__(self, header: Any) -> None:
        from prosemc.pipeline import model_for

        self.model = model_for(header.encoder, self.requested)
        if self.background and hasattr(self.model, "prepare"):
            self._thread = threading.Thread(target=self._prepare, name="prosemc-model-load", daemon=True)
            self._thread.start()

    def _prepare(self) -> None:
        try:
            self.model.prepare(self.question)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread by ready()
            self._failure = error

    def ready(self) -> Any:
        """The model, once its background loading (if any) has finished; re-raises what that loading raised."""
        if self._thread is not None:
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self.model
