"""`prosemc serve` (the cloud, kept warm) and `prosemc send` (the edge side of the loop)."""

from __future__ import annotations

import json

import click

from prosemc.cli import cli
from prosemc.cli.console import naming, plural, say
from prosemc.cli.io import display_name
from prosemc.cli.options import refuse_beside_bundle, threads_option
from prosemc.report import document




@cli.command()
@click.option("-m", "--model", default="lite", show_default=True, help="The model to serve: 'lite' or a Hugging Face "
              "VLM id / local folder. Streams of any other model are refused (409), naming both.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default accepts local clients only; 0.0.0.0 exposes the server.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="HTTP port (0: any free).")
@click.option("--nc-port", type=click.IntRange(0, 65535), default=None,
              help="Also accept netcat on this port: a question line, then the .psem stream; one JSON line back.")
@click.option("--token", envvar="PROSEMC_TOKEN", default=None, help="Require `Authorization: Bearer TOKEN` on every "
              "request (401 otherwise); default $PROSEMC_TOKEN.")
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a byte before a stream is refused (408).")
@click.option("--max-body", "max_body", type=click.IntRange(min=1024), default=64 << 20, show_default=True,
              help="Largest request body in bytes (413 beyond).")
@click.option("--no-llm", is_flag=True, help="Label-only replies: never load the language model (lite).")
@click.option("--ray", "use_ray", is_flag=True, help="Run as a Ray Serve deployment (pip install 'prosemc[cluster]').")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Serve replicas.")
@click.option("--ray-address", default=None, help="Join this Ray cluster ('auto', ray://head:10001); default: start "
              "a local one.")
@threads_option
def serve(model: str, host: str, port: int, nc_port: int | None, token: str | None, read_timeout: float,
          max_body: int, no_llm: bool, use_ray: bool, replicas: int, ray_address: str | None) -> None:
    """Serve answers over HTTP from a model kept warm: start once on the cloud machine.

    Clients stream a .psem (layers as they are produced) and get the `prosemc query --json` report back,
    answered from the complete layers that arrived when the stream ends, the client's deadline passes,
    or the layers' quality estimate reaches the client's confidence.

    \b
      prosemc serve                                   # http://127.0.0.1:8000, lite
      prosemc encode cam.jpg -o - | curl -sS -T - "http://127.0.0.1:8000/v1/query?q=what+is+shown"
      prosemc send cam.jpg http://127.0.0.1:8000 "what is shown?" --deadline 2
      prosemc serve --nc-port 9000                    # + netcat: question line, then the stream
      prosemc serve --host 0.0.0.0 --token "$SECRET"  # reachable from other machines: use a token
      prosemc serve --ray --replicas 2                # Ray Serve deployment, same API

    Endpoints: GET /healthz, GET /v1/models, PUT|POST /v1/query?q=...[&deadline=S][&confidence=P][&llm=0]
    [&events=1]. Request logs go to stderr, one line each. Ctrl-C stops it.
    """
    from prosemc.serve.app import ServerConfig
    from prosemc.serve.runner import run, run_ray

    config = ServerConfig(model=model, token=token or None, llm=not no_llm, read_timeout=read_timeout,
                          max_body_bytes=max_body)
    if use_ray:
        run_ray(config, host, port, replicas, ray_address)
    else:
        run(config, host, port, nc_port)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("url")
@click.argument("question")
@click.option("-m", "--model", default="lite", show_default=True, help="The edge model (must be the one the server "
              "serves; a server of another model is refused before anything is sent).")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="Encode with a torch-free edge bundle folder (prosemc export) instead of --model.")
@click.option("--codec", "codec_name", default=None, help="Token codec (default: metaae for lite, else baseline).")
@click.option("--compact", is_flag=True, help="Send the compact form (a short header naming the model + codec "
              "profile; the server must know the profile, `prosemc profiles`).")
@click.option("--deadline", type=click.FloatRange(min=0.01), default=None,
              help="Seconds from now to the printed answer: sends the largest prefix whose bytes reach the cloud in "
                   "time (from the bandwidth, the round trip and the server's answer time) and has the server answer "
                   "then with what arrived.")
@click.option("--bandwidth", default="auto", show_default=True,
              help="Uplink rate for the deadline (e.g. 1mbit, 250kbit), or auto: the rate measured on earlier sends "
                   "to this server (none on the first).")
@click.option("--confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Stop once the layers' quality estimate (predicted token cosine to the full tokens) reaches P.")
@click.option("--estimate-from", type=click.Choice(["edge", "cloud"]), default="edge", show_default=True,
              help="edge: predict the cloud's estimate locally (same function, no waiting); cloud: send one layer at "
                   "a time and wait for the server's estimate of it (one round trip per layer).")
@click.option("--no-llm", is_flag=True, help="Ask for the label-only reply (no language model; fastest).")
@click.option("--token", envvar="PROSEMC_TOKEN", default=None, help="Bearer token (default: $PROSEMC_TOKEN).")
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True,
              help="Retries (backoff 0.5, 1, 2, 4 ... s) while the server is down or fails mid-stream.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the server's report plus a \"send\" section as JSON (docs/json.md).")
@threads_option
@click.pass_context
def send(ctx: click.Context, image: str, url: str, question: str, model: str, bundle: str | None, codec_name: str | None,
         compact: bool, deadline: float | None, bandwidth: str, confidence: float | None, estimate_from: str, no_llm: bool,
         token: str | None, retries: int, as_json: bool) -> None:
    """Encode IMAGE (or - for stdin), stream its layers to a `prosemc serve` at URL and print its answer to QUESTION.

    Layers are sent as they fit: --deadline and --bandwidth cap the prefix, --confidence stops it once the
    codec's quality estimate is reached. The answer goes to stdout (the whole report with --json); what was
    sent and why goes to stderr.

    \b
      prosemc send cam.jpg http://127.0.0.1:8000 "what is shown?"
      prosemc send cam.jpg http://cloud:8000 "what is shown?" --deadline 2 --bandwidth 1mbit
      prosemc send cam.jpg http://cloud:8000 "what animal is this?" --confidence 0.9 --json
      prosemc send --bundle edge/ cam.jpg http://cloud:8000 "what is shown?"   # torch-free edge
    """
    from prosemc.cli.io import open_input
    from prosemc.serve.send import SendOptions, send as send_image

    if not question.strip():
        raise click.UsageError("the question is empty; ask something, e.g. \"what is shown?\"")
    if bundle is not None:
        refuse_beside_bundle(ctx, "model", "codec_name")

    def read_image() -> object:  # called by send once the connection to the server is being opened
        from prosemc.models.images import load_image

        with naming(display_name(image)), open_input(image) as stream:
            return load_image(stream.read() if image == "-" else image)

    options = SendOptions(url=url, question=question, model=model, bundle=bundle, codec_name=codec_name,
                          compact=compact, deadline_s=deadline, bandwidth=bandwidth, confidence=confidence, estimate_from=estimate_from,
                          llm=not no_llm, token=token or None, retries=retries)
    reply = send_image(read_image, options, log=say)
    report = document("send", input=display_name(image), url=url,
                      **{k: v for k, v in reply.items() if k not in ("schema", "command", "input")})
    sent = report["send"]
    click.echo(json.dumps(report) if as_json else report["answer"])
    estimate = f", estimate {report['estimate']:.3f}" if report.get("estimate") is not None else ""
    say(f"sent {len(sent['layers'])} of {plural(sent['layers_declared'], 'layer')}, {sent['bytes']} bytes "
        f"({sent['plan']}{estimate}); the server used {len(report['layers'])} ({report['stopped_by']}); "
        f"{sent['timings_ms']['total'] / 1e3:.2f} s")
