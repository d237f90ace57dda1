"""`prosemc encode`, `decode` and `query`: the main job, edge and cloud halves, over files, pipes and batches."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any, Callable

import click

from prosemc.cli import cli
from prosemc.cli.batch import BatchRun, planned_outputs, read_list
from prosemc.cli.console import detail, emit, naming, plural, printable, say
from prosemc.cli.io import atomic_output, display_name, open_input, writable_folder
from prosemc.cli.options import refuse_beside_bundle, threads_option
from prosemc.codec import codec_names
from prosemc.format.idle import DEFAULT_IDLE_TIMEOUT, can_stall
from prosemc.report import answer_report, decoded_fields, document, milliseconds, psem_fields

FILE = click.Path(dir_okay=False, allow_dash=True)
COMPILED_BATCH = 256  # from this many images the compiled encoder's ~0.5 s start pays off (~2 ms saved per image)

CODEC_WEIGHTS_IN = click.option(
    "--codec-weights", type=click.Path(dir_okay=False), default=None,
    help="The metaae weights file that encoded IN, when prosemc does not ship it (the header names it by sha256).")
READ_TIMEOUT = click.option(
    "--read-timeout", type=click.FloatRange(min=0), default=DEFAULT_IDLE_TIMEOUT, show_default=True, metavar="SECONDS",
    help="Once bytes arrive on a pipe or socket, treat SECONDS without a byte as the end of the stream (the sender "
         "stalled) and use the complete layers so far; 0 waits for ever.")


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


@cli.command()
@click.argument("images", metavar="[IMAGE]...", nargs=-1, type=FILE)
@click.option("-o", "--output", type=FILE, default=None,
              help="The .psem for a single IMAGE, or - for stdout (written atomically; replaces a file of that name). "
                   "Default: IMAGE's name with .psem, beside it (photo.jpg -> photo.psem).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write each IMAGE's .psem into DIR (created if missing), named as IMAGE with .psem.")
@click.option("--from", "list_file", type=FILE, default=None, metavar="LIST",
              help="Also encode the images named in LIST, one path per line; - reads the list from stdin.")
@click.option("--force", is_flag=True, help="Overwrite .psem files that exist under the default or --out-dir names.")
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
@click.option("--bundle", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Run an exported edge bundle (`prosemc export`) with onnxruntime instead of the torch model: no "
                   "torch needed (pip install 'prosemc[edge]'). The bundle fixes model and codec.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (docs/json.md): on stdout, or stderr with -o -; a batch reports every "
                   "image in one document.")
@threads_option
@click.pass_context
def encode(ctx: click.Context, images: tuple[str, ...], output: str | None, out_dir: str | None,
           list_file: str | None, force: bool, model: str, codec_name: str | None, codec_weights: str | None,
           layers: int | None, max_bytes: int | None, compact: bool, bundle: str | None, as_json: bool) -> None:
    """Encode IMAGE (JPEG, PNG, WebP, BMP, GIF; or - for stdin) into a layered .psem, or many images in one run.

    Runs the model's vision encoder (the edge half), compresses its tokens into progressive layers and
    writes them front to back, so the output can go straight into a pipe or socket. Images over 64 MiB,
    89 Mpx or an aspect ratio of 32:1 are refused.

    Several IMAGEs, or a list with --from, are encoded in one process (the model loads once) with a
    progress line, each into IMAGE.psem beside it or in --out-dir. Existing files are not overwritten
    without --force; that is checked for every image before any work. An image that fails is reported and
    the others go on; the exit code is then 3 (2 if every image failed). From 256 images on, the per-token
    metaae codec (lite-dense) encodes with its compiled kernel where numba is installed: the same bytes,
    ~2 ms less per image, ~0.5 s once.

    \b
      prosemc encode photo.jpg                                   # -> photo.psem
      prosemc encode photo.jpg -o - --max-bytes 2000 | nc cloud 9000
      prosemc encode photo.jpg -o - --compact --max-bytes 384 | nc cloud 9000
      prosemc encode *.jpg --out-dir psem/
      find photos -name '*.jpg' | prosemc encode --from - --out-dir psem/
      prosemc encode --bundle edge/ cam.jpg -o - | nc cloud 9000      # on the board, without torch
    """
    from prosemc.errors import InputError

    if bundle is not None:
        refuse_beside_bundle(ctx, "model", "codec_name", "codec_weights")

    names = list(images) + (read_list(list_file) if list_file is not None else [])
    if not names:
        raise click.UsageError("give an IMAGE (or - for stdin), or --from LIST")
    batch = list_file is not None or len(names) > 1
    if output is not None and (batch or out_dir is not None):
        raise click.UsageError("-o names the output of a single IMAGE; for several use --out-dir DIR, or leave both "
                               "out (photo.jpg -> photo.psem beside it)")
    if "-" in names and (batch or list_file == "-"):
        raise InputError("- (an image on stdin) cannot be part of a batch; encode it on its own with -o FILE")
    if out_dir is not None:
        writable_folder(out_dir)
    outputs = [output] if output is not None else [str(path) for path in planned_outputs(names, out_dir, force)]
    settings = {"codec_name": codec_name, "codec_weights": codec_weights, "max_layers": layers, "max_bytes": max_bytes,
                "compact": compact}
    if not batch:
        with naming(display_name(names[0])):
            report = _encode_one(names[0], outputs[0], lambda: _load_encoder(model, bundle, settings))
        emit(report, as_json, _encode_line(report), data_on_stdout=outputs[0] == "-")
        detail("timings: " + ", ".join(f"{k} {v:.0f} ms" for k, v in report["timings_ms"].items()))
        _warn_if_unknown_profile(report)
        return
    from prosemc.codec.metaae_planes_kernel import available as compiled_available

    start = time.perf_counter()
    encoder = _load_encoder(model, bundle, settings, compiled=len(names) >= COMPILED_BATCH and compiled_available())
    load_ms = _ms_since(start)
    run = BatchRun("encoding", "image", len(names))
    try:
        for name, target in zip(names, outputs):
            result = run.run(name, lambda: _encode_one(name, target, lambda: encoder))
            if result is not None:
                run.note(_encode_line(result))
    finally:
        run.close()
    written = sum(r["bytes"] for r in run.results if "error" not in r)
    emit(document("encode", results=run.results, **run.counts(), bytes=written,
                  timings_ms=milliseconds({"load_model": load_ms, "total": run.seconds * 1e3})), as_json)
    done = run.counts()["succeeded"]
    where = f" into {out_dir}" if out_dir is not None else ""
    run.finish(f"encoded {done} of {plural(len(names), 'image')}{where}, {written} bytes, in {run.seconds:.1f} s "
               f"({run.seconds / len(names):.2f} s per image, model load included)")
    encoded = [result for result in run.results if "error" not in result]
    if encoded:  # every image has the same profile
        _warn_if_unknown_profile(encoded[0])


def _load_model(name: str) -> Any:
    from prosemc.models import load_model

    start = time.perf_counter()
    model = load_model(name)
    detail(f"model {model.model_id} loaded in {_ms_since(start) / 1e3:.1f} s")
    return model


def _load_encoder(model: str, bundle: str | None, settings: dict[str, Any],
                  compiled: bool = False) -> Callable[[Any, Any], Any]:
    """(RGB image, output stream) -> EncodeReport: the torch model's edge half with its codec (loaded once), or an
    exported bundle's. compiled: the per-token metaae codec's compiled encoder."""
    options = {key: settings[key] for key in ("max_layers", "max_bytes", "compact")}
    if bundle is None:
        from prosemc.pipeline import encode_image, encoder_codec

        vlm = _load_model(model)
        codec = encoder_codec(vlm.model_id, settings["codec_name"], settings["codec_weights"], compiled)
        return lambda picture, out: encode_image(picture, out, vlm, codec=codec, **options)
    from prosemc.export.bundle import EdgeBundle

    start = time.perf_counter()
    edge = EdgeBundle.load(bundle)
    detail(f"bundle {display_name(bundle)} ({edge.vision.model_id}) loaded in {_ms_since(start) / 1e3:.2f} s")
    return lambda picture, out: edge.encode_image(picture, out, **options)


def _encode_one(image: str, output: str, encoder: Callable[[], Callable[[Any, Any], Any]]) -> dict[str, Any]:
    """Encode one image file into `output` with the encoder `encoder()` gives (loaded once the image is); its
    `encode` report."""
    from prosemc.models.images import load_image

    with atomic_output(output, inputs=[image]) as out:  # checked now, created at the first byte
        start = time.perf_counter()
        with open_input(image) as stream:
            picture = load_image(stream if image == "-" else image)
        load_ms = _ms_since(start)
        report = encoder()(picture, out)
    from prosemc.cli.profiles import profile_object

    form = "compact" if report.profile_id else "full"
    kept = report.layer_bytes[: report.layers_written]
    profile = profile_object(bytes.fromhex(report.profile_id) if report.profile_id else None)
    return document("encode", input=display_name(image), output=display_name(output, "<stdout>"),
                    **psem_fields(report.header, kept, report.header_bytes, report.bytes_written, form=form,
                                  profile=profile),
                    runtime={"vision": report.runtime, "coder": report.entropy_coder},
                    timings_ms=milliseconds({"load_image": load_ms, **report.timings_ms}))


def _encode_line(report: dict[str, Any]) -> str:
    sizes = ", ".join(str(layer["bytes"]) for layer in report["layers"])
    return (f"{report['output']}: {len(report['layers'])} of {plural(report['layers_declared'], 'layer')}, "
            f"{report['bytes']} bytes (header {report['header_bytes']}, {'layer' if len(report['layers']) == 1 else 'layers'} "
            f"{sizes})" + (f", compact: needs profile {report['profile']['id']}" if report["profile"] else ""))


def _warn_if_unknown_profile(report: dict[str, Any]) -> None:
    from prosemc.cli.profiles import warn_if_unknown_profile

    warn_if_unknown_profile(report["profile"])


@cli.command()
@click.argument("source", metavar="IN", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="safetensors file for the tokens (written atomically).")
@click.option("--layers", type=click.IntRange(min=1), help="Decode only the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Decode only the layer prefix within N file bytes.")
@CODEC_WEIGHTS_IN
@READ_TIMEOUT
@click.option("--json", "as_json", is_flag=True,
              help="Print what was decoded as JSON (docs/json.md): on stdout, or stderr with -o -.")
@threads_option
def decode(source: str, output: str, layers: int | None, max_bytes: int | None, codec_weights: str | None,
           read_timeout: float, as_json: bool) -> None:
    """Decode a .psem (or the prefix of it that arrived) into tokens [N, D] float32 in a safetensors file.

    The tensor is named "tokens"; the file's metadata records the model ("encoder"), codec and layers used.
    A compact .psem needs its profile among `prosemc profiles`.
    """
    from safetensors.numpy import save

    from prosemc.pipeline import read_tokens

    name = display_name(source)
    with naming(name), open_input(source) as stream, atomic_output(output, inputs=[source]) as out:
        decoded = read_tokens(stream, max_layers=layers, max_bytes=max_bytes, codec_weights=codec_weights,
                              idle_timeout=read_timeout or None)
        _say_if_incomplete(name, decoded)
        meta = {"encoder": decoded.header.encoder, "codec": decoded.header.codec_id,
                "layers_used": str(decoded.layers_used), "info": json.dumps(decoded.edge.info, sort_keys=True)}
        out.write(save({"tokens": decoded.edge.tokens}, metadata=meta))
    report = document("decode", input=name, output=display_name(output, "<stdout>"), **decoded_fields(decoded))
    emit(report, as_json, f"decoded {plural(decoded.layers_used, 'layer')} of {name} -> {report['output']}, tokens "
                          f"{list(decoded.edge.tokens.shape)}", data_on_stdout=output == "-")


def _say_if_incomplete(name: str, decoded: Any) -> None:
    """Say so when the input was cut, stalled or a prefix (a limit the user set is no news: -v only)."""
    end = decoded.end
    stalled = f"the sender stalled (no byte for {decoded.stalled_after_s:g} s); " if decoded.stalled_after_s else ""
    using = f"using {plural(decoded.layers_used, 'layer')} ({decoded.bytes_used} bytes)"
    if stalled or end.status != "complete":
        say(f"{name}: {stalled}{end.describe()}; {using}")
    elif decoded.layers_used < end.layers:
        detail(f"{name}: {using} of its {end.layers}")


@cli.command()
@click.argument("arguments", metavar="IN... QUESTION", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--jsonl", "pairs_file", type=FILE, default=None, metavar="FILE",
              help='Answer the questions in FILE instead, one JSON object per line: {"file": "x.psem", "question": '
                   '"what is shown?"}; - reads them from stdin.')
@click.option("-m", "--model", default=None,
              help="The model to answer with: the built-in 'lite' / 'lite-dense' the file names (the default), else "
                   "the Hugging Face checkpoint (hub id or folder) that encoded IN. A mismatch with the file is refused.")
@click.option("--layers", type=click.IntRange(min=1), help="Use only the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Use only the layer prefix within N file bytes.")
@CODEC_WEIGHTS_IN
@READ_TIMEOUT
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer with its labels, model, codec, layers used, status and timings as JSON "
                   "(docs/json.md); several answers in one document.")
@threads_option
def query(arguments: tuple[str, ...], pairs_file: str | None, model: str | None, layers: int | None,
          max_bytes: int | None, codec_weights: str | None, read_timeout: float, as_json: bool) -> None:
    """Answer QUESTION about the image in IN (a .psem file, or - for a pipe or socket), or about several.

    Decodes the complete layers that arrived (a cut or stalled stream still answers from them, and says so
    on stderr), rebuilds the visual tokens and runs the cloud half of the model on them. On a pipe or
    socket the model loads while the layers are still arriving. IN may be in the full or the compact form
    (whose profile must be among `prosemc profiles`).

    Several files, or --jsonl pairs, are answered in one process (each model loads once), printed as
    "FILE: ANSWER" lines. A file that fails is reported and the others go on; the exit code is then 3 (2 if
    every one failed).

    \b
      prosemc query photo.psem "what is shown?"
      prosemc encode cam.jpg -o - | ssh cloud prosemc query - "what is shown?"
      prosemc query psem/*.psem "what animal is this?"
      prosemc query --jsonl questions.jsonl --json
    """
    pairs = _query_pairs(arguments, pairs_file)
    settings = {"max_layers": layers, "max_bytes": max_bytes, "codec_weights": codec_weights,
                "idle_timeout": read_timeout or None}
    models: dict[tuple[str, str | None], Any] = {}
    if pairs_file is None and len(pairs) == 1:
        source, question = pairs[0]
        with naming(display_name(source)):
            report = _answer_one(source, question, model, settings, models)
        click.echo(json.dumps(report) if as_json else report["answer"])
        detail("timings: " + ", ".join(f"{k} {v:.0f} ms" for k, v in report["timings_ms"].items()))
        return
    run = BatchRun("answering", "question", len(pairs))
    try:
        for source, question in pairs:
            result = run.run(display_name(source), lambda: _answer_one(source, question, model, settings, models))
            if result is not None and not as_json:
                asked = f" ({question})" if pairs_file is not None else ""
                click.echo(printable(f"{result['input']}{asked}: {result['answer']}"))
    finally:
        run.close()
    emit(document("query", results=run.results, **run.counts(),
                  timings_ms=milliseconds({"total": run.seconds * 1e3})), as_json)
    run.finish(f"answered {run.counts()['succeeded']} of {plural(len(pairs), 'question')} in {run.seconds:.1f} s")


def _query_pairs(arguments: tuple[str, ...], pairs_file: str | None) -> list[tuple[str, str]]:
    """(file, question) pairs from `IN... QUESTION` or from a JSONL file; usage errors before any work."""
    from prosemc.errors import InputError

    if pairs_file is not None:
        if arguments:
            raise click.UsageError("give either IN... QUESTION or --jsonl FILE, not both")
        return _read_pairs(pairs_file)
    if len(arguments) < 2:
        raise click.UsageError("give the .psem file(s) and then the question, e.g. prosemc query x.psem \"what is "
                               "shown?\" (or --jsonl FILE)")
    *sources, question = arguments
    if not question.strip():
        raise InputError("the question is empty; ask something, e.g. \"what is shown?\"")
    if "-" in sources and len(sources) > 1:
        raise InputError("- (a .psem on stdin) cannot be one of several inputs; query it on its own")
    return [(source, question) for source in sources]


def _read_pairs(pairs_file: str) -> list[tuple[str, str]]:
    """The (file, question) pairs of a JSONL file, every line checked before any work."""
    from prosemc.errors import InputError

    where = display_name(pairs_file)
    pairs = []
    for number, line in enumerate(read_list(pairs_file), start=1):
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if not (isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("question"), str)):
            raise InputError(f"{where} line {number} is not a JSON object with \"file\" and \"question\" strings; "
                             'write one {"file": "x.psem", "question": "what is shown?"} per line')
        if not item["question"].strip():
            raise InputError(f"{where} line {number}: the question is empty; ask something")
        if item["file"] == "-":
            raise InputError(f"{where} line {number}: - (stdin) cannot be one of several inputs; name a file")
        pairs.append((item["file"], item["question"]))
    if not pairs:
        raise InputError(f"{where} holds no questions; write one JSON object per line")
    return pairs


def _answer_one(source: str, question: str, requested: str | None, settings: dict[str, Any],
                models: dict[tuple[str, str | None], Any]) -> dict[str, Any]:
    """Read, decode and answer one .psem; its `query` report. `models` keeps every model loaded, by file model."""
    from prosemc.pipeline import read_tokens

    name = display_name(source)
    start = time.perf_counter()
    with open_input(source) as stream:
        loader = _ModelLoader(requested, question, background=can_stall(stream), models=models)
        decoded = read_tokens(stream, on_header=loader, **settings)
    decode_ms = _ms_since(start)
    _say_if_incomplete(name, decoded)
    start = time.perf_counter()
    answer = loader.ready().answer(decoded.edge, question)
    answer_ms = _ms_since(start)
    return answer_report(decoded, answer, {"read_decode": decode_ms, "answer": answer_ms}, input=name,
                         question=question)


class _ModelLoader:
    """Resolves the answering model from the header as soon as it arrives and, when the layers are still coming
    over a pipe or socket, loads it (model.prepare) in a background thread meanwhile."""

    def __init__(self, requested: str | None, question: str, background: bool,
                 models: dict[tuple[str, str | None], Any]) -> None:
        self.requested, self.question, self.background = requested, question, background
        self.models = models  # (file's model id, requested) -> model, shared by the files of one run
        self.model: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __call__(self, header: Any) -> None:
        from prosemc.pipeline import model_for

        key = (header.encoder, self.requested)
        if key in self.models:
            self.model = self.models[key]
            return
        start = time.perf_counter()
        self.model = self.models[key] = model_for(header.encoder, self.requested)
        detail(f"model {self.model.model_id} ready in {_ms_since(start) / 1e3:.1f} s")
        if self.background and hasattr(self.model, "prepare"):  # the thread sees -q as this one does
            self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._prepare,),
                                            name="prosemc-model-load", daemon=True)
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
