"""`prosemc bench ...`: benchmarks that write JSON + Markdown results under docs/bench/ (never timed tests)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import click

from prosemc.cli import cli

OUT = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/bench"),
                   show_default=True, help="Folder for NAME.json and NAME.md.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(out_dir: Path, name: str, results: dict[str, Any], markdown: str, as_json: bool) -> None:
    """Write NAME.json and NAME.md into out_dir and show the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": machine(), **results}, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    click.echo(json.dumps(results, sort_keys=True) if as_json else markdown)
    click.echo(f"wrote {out_dir / name}.json and .md", err=True)


def heldout_photos() -> dict[str, object]:
    """name -> RGB PIL image of the packaged photos that codec training never sees."""
    from prosemc.training.photos import builtin_sources

    return {source.name: source.load() for source in builtin_sources("heldout")}


@cli.group()
def bench() -> None:
    """Measure speed, memory and size; results go to docs/bench/ (compare only numbers from one run)."""


@bench.command()
@OUT
@AS_JSON
def container(out_dir: Path, as_json: bool) -> None:
    """Read + verify throughput of a 10 MB, 10-layer .psem, and a cold `prosemc info` on it."""
    from prosemc.bench import container as bench_container

    results = bench_container.run()
    save(out_dir, "container", results, bench_container.markdown(results, machine()), as_json)


@bench.command()
@OUT
@AS_JSON
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per step.")
@click.option("--codec", "codec_name", default="metaae", show_default=True, help="Codec to measure.")
def speed(out_dir: Path, as_json: bool, repeats: int, codec_name: str) -> None:
    """Encode time per image (vision + codec), cold encode/query processes, peak RSS, bytes per layer (lite)."""
    from rich.progress import Progress

    from prosemc.bench import speed as bench_speed

    with Progress(transient=True) as progress:
        progress.add_task("measuring (≈1 min)…", total=None)
        results = bench_speed.run(heldout_photos(), repeats=repeats, codec_name=codec_name)
    save(out_dir, f"speed-{results['codec'].split('/')[0]}", results, bench_speed.markdown(results, machine()), as_json)


@bench.command()
@OUT
@AS_JSON
@click.option("-m", "--model", default="lite", show_default=True, help="Model whose tokens are coded.")
@click.option("--codec", "codecs", multiple=True, help="Codec(s) at every level; default: metaae and baseline.")
@click.option("--answers/--no-answers", default=True, show_default=True,
              help="Measure answer consistency (runs the language model per scheme, level and photo).")
def rd(out_dir: Path, as_json: bool, model: str, codecs: tuple[str, ...], answers: bool) -> None:
    """Rate vs fidelity of every scheme on the held-out packaged photos: table, budgets, plot, latency model."""
    from rich.progress import Progress

    from prosemc.bench import rd as bench_rd
    from prosemc.models import load_model

    chosen = list(codecs) or ["metaae", "baseline"]
    photos = heldout_photos()
    with Progress(transient=True) as progress:
        task = progress.add_task("evaluating", total=len(photos))
        evaluation, results = bench_rd.run(photos, load_model(model), chosen, answers=answers,
                                           progress=lambda name: progress.update(task, advance=1, description=name))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_name = f"rd-{model.replace('/', '_')}.png"
    bench_rd.plot(evaluation, out_dir / plot_name)
    save(out_dir, f"rd-{model.replace('/', '_')}", results, bench_rd.markdown(results, machine(), plot_name), as_json)


@bench.command(name="serve")
@OUT
@AS_JSON
@click.option("--seconds", type=click.FloatRange(min=5), default=120, show_default=True, help="Length of the 16-client load.")
@click.option("--fault-seconds", type=click.FloatRange(min=5), default=30, show_default=True,
              help="Length of each half of the stalled/killed-client comparison.")
@click.option("--views", type=click.IntRange(min=1), default=16, show_default=True,
              help="Views per held-out photo for the estimator measurement.")
def serve_bench(out_dir: Path, as_json: bool, seconds: float, fault_seconds: float, views: int) -> None:
    """The warm server over a real 1 Mbps + 200 ms link: answer times, end to end, estimator, load, faults.

    Builds the link with network namespaces (root) or a throttling relay, starts `prosemc serve` at its cloud
    end and runs the clients at its edge end. Takes about 8 minutes with the defaults.
    """
    from rich.console import Console

    from prosemc.bench import serve as bench_serve

    console = Console(stderr=True)
    results = bench_serve.run(heldout_photos(), seconds=seconds, fault_seconds=fault_seconds, views=views,
                              progress=lambda line: console.print(f"bench serve: {line}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_serve.plot(results, out_dir / "serve-lite.png")
    del results["estimator_rows"], results["end_to_end_rows"]
    save(out_dir, "serve-lite", results, bench_serve.markdown(results, machine(), "serve-lite.png"), as_json)
