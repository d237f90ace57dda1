"""`prosemc bench ...`: benchmarks that write NAME.json + NAME.md (+ plots) into a folder (never timed tests).

The folder is `--out`, by default a new folder in the current directory named for the run
(`prosemc-bench-speed-20250101-120000`); the committed results live in docs/bench/ (`--out docs/bench`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import click

from prosemc.cli import cli
from prosemc.cli.console import say
from prosemc.cli.io import writable_folder
from prosemc.cli.options import threads_option
from prosemc.report import document

OUT = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                   help="Folder for NAME.json and NAME.md (created if missing). Default: a new folder "
                        "prosemc-bench-NAME-DATE-TIME in the current directory.")
AS_JSON = click.option("--json", "as_json", is_flag=True,
                       help="Print the results as JSON on stdout (what NAME.json holds; docs/json.md).")


def machine() -> str:
    from prosemc.runtime import resolve_threads

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{resolve_threads()} prosemc threads")


def out_folder(out_dir: Path | None, name: str) -> Path:
    """The folder results go to, checked (and created) before any measuring starts."""
    folder = out_dir if out_dir is not None else Path(f"prosemc-bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return writable_folder(folder)


def save(out_dir: Path, command: str, name: str, results: dict[str, Any], markdown: str, as_json: bool) -> None:
    """Write NAME.json (the `bench COMMAND` report, docs/json.md) and NAME.md into out_dir, each atomically, and
    show the report (JSON with --json, else the Markdown) on stdout."""
    report = document(f"bench {command}", machine=machine(), **results)
    for suffix, text in ((".json", json.dumps(report, indent=1) + "\n"), (".md", markdown)):
        target = out_dir / f"{name}{suffix}"
        partial = target.with_name(f".{target.name}.part")
        partial.write_text(text)
        os.replace(partial, target)
    click.echo(json.dumps(report) if as_json else markdown)
    say(f"wrote {out_dir / name}.json and .md")


def heldout_photos() -> dict[str, object]:
    """name -> RGB PIL image of the packaged photos that codec training never sees."""
    from prosemc.training.photos import builtin_sources

    return {source.name: source.load() for source in builtin_sources("heldout")}


@cli.group()
def bench() -> None:
    """Measure speed, memory and size; each run writes its results into a folder (compare numbers of one run).

    \b
      prosemc bench speed                    # -> ./prosemc-bench-speed-DATE-TIME/speed-metaae.{json,md}
      prosemc bench rd --out docs/bench      # refresh the committed results
    """


@bench.command()
@OUT
@AS_JSON
@threads_option
def container(out_dir: Path | None, as_json: bool) -> None:
    """Read + verify throughput of a 10 MB, 10-layer .psem, and a cold `prosemc info` on it."""
    from prosemc.bench import container as bench_container
    from prosemc.progress import Progress

    folder = out_folder(out_dir, "container")
    with Progress("prosemc: bench container", total=bench_container.STEPS, heartbeat=True) as progress:
        results = bench_container.run(progress=progress)
    save(folder, "container", "container", results, bench_container.markdown(results, machine()), as_json)


@bench.command()
@OUT
@AS_JSON
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per step.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds of the thread comparison (1, 2 and the default thread count, interleaved, under load).")
@click.option("--codec", "codec_name", default="metaae", show_default=True, help="Codec to measure.")
@click.option("--batch", type=click.IntRange(min=0), default=50, show_default=True, metavar="N",
              help="Images of the batch comparison (one process against N processes; 0 skips it).")
@threads_option
def speed(out_dir: Path | None, as_json: bool, repeats: int, rounds: int, codec_name: str, batch: int) -> None:
    """Encode time per image (vision + codec), cold encode/query processes, peak memory, bytes per layer (lite).

    Also compares thread counts 1, 2 and the default (--threads, else $PROSEMC_THREADS, else half the cores)
    side by side while another process keeps one core busy: in-process encode and a warm answer; and N images
    encoded by one `prosemc encode IMG... --out-dir` process against N single-image processes.
    """
    from prosemc.bench import speed as bench_speed
    from prosemc.progress import Progress

    folder = out_folder(out_dir, "speed")
    photos = heldout_photos()
    with Progress("prosemc: bench speed", total=bench_speed.steps(photos, rounds, batch), heartbeat=True) as progress:
        results = bench_speed.run(photos, repeats=repeats, codec_name=codec_name, rounds=rounds, batch=batch,
                                  progress=progress)
    save(folder, "speed", f"speed-{results['codec']['id'].split('/')[0]}", results,
         bench_speed.markdown(results, machine()), as_json)


@bench.command()
@OUT
@AS_JSON
@click.option("-m", "--model", default="lite", show_default=True, help="Model whose tokens are coded.")
@click.option("--codec", "codecs", multiple=True,
              help="Codec(s) at every level; default: the model's default codec (metaae for lite, lite-dense) and baseline.")
@click.option("--answers/--no-answers", default=True, show_default=True,
              help="Measure answer consistency (runs the language model per scheme, level and photo).")
@threads_option
def rd(out_dir: Path | None, as_json: bool, model: str, codecs: tuple[str, ...], answers: bool) -> None:
    """Rate vs fidelity of every scheme on the held-out packaged photos: table, budgets, plot, latency model."""
    from prosemc.bench import rd as bench_rd
    from prosemc.models import load_model
    from prosemc.progress import Progress

    from prosemc.pipeline import default_codec

    folder = out_folder(out_dir, "rd")
    chosen = list(codecs) or list(dict.fromkeys([default_codec(model), "baseline"]))
    photos = heldout_photos()
    with Progress("prosemc: bench rd", total=len(photos), heartbeat=True) as progress:
        evaluation, results = bench_rd.run(photos, load_model(model), chosen, answers=answers,
                                           progress=lambda name: progress.advance(note=name))
    name = f"rd-{model.replace('/', '_')}"
    bench_rd.plot(evaluation, folder / f"{name}.png")
    save(folder, "rd", name, results, bench_rd.markdown(results, machine(), f"{name}.png"), as_json)


@bench.command()
@OUT
@AS_JSON
@click.option("-m", "--model", default="lite-dense", show_default=True, help="Model whose per-token codec is fitted.")
@click.option("--images", multiple=True, default=("builtin",), show_default=True,
              help="The photos to cross-fit on (as `prosemc fit --images`): a folder, or 'builtin'; repeat for "
                   "several.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Folds of the photos.")
@click.option("--views", type=click.IntRange(min=1), default=8, show_default=True,
              help="Training views measured per photo (view 1 is the photo itself).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold split and the bootstrap.")
@click.option("--fresh-seed", type=int, default=None, metavar="SEED",
              help="Measure --views new augmented views of this seed per photo (none a training view) instead of its "
                   "training views: 'seen' then means this photo, not these views.")
@click.option("--extra-images", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Photos every codec also trains on, never measured (e.g. photos/debian from `make photos`): does "
                   "training on more photos close the gap?")
@click.option("--resamples", type=click.IntRange(min=100), default=10000, show_default=True,
              help="Bootstrap resamples (of photos) for the 95 % intervals.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Token cache folder (default: prosemc's cache, shared with `prosemc fit`).")
@threads_option
def generalisation(out_dir: Path | None, as_json: bool, model: str, images: tuple[str, ...], folds: int, views: int,
                   seed: int, fresh_seed: int | None, extra_images: str | None, resamples: int,
                   cache_dir: str | None) -> None:
    """Does the per-token codec generalise? A paired cross-fit on the training photos.

    Splits the photos into folds; for each fold fits the codec (the shipped weights' config) on the other photos and
    measures the fold's photos decoded by it (unseen) and by the codec fitted on every photo (seen; checked against
    the shipped weights' sha256): per layer top-1 agreement, per-token cosine and payload bytes, the gap seen -
    unseen with 95 % intervals by bootstrap over photos. About 3 minutes for lite-dense on one thread.

    \b
      prosemc bench generalisation --model lite-dense --threads 1 --out docs/bench
      prosemc bench generalisation --model lite-dense --fresh-seed 1000 --threads 1 --out docs/bench
    """
    from prosemc.bench import generalisation as bench_generalisation
    from prosemc.progress import Progress

    folder = out_folder(out_dir, "generalisation")
    with Progress("prosemc: bench generalisation", heartbeat=True) as progress:

        def show(done: int, total: int, note: str) -> None:
            progress.total = total
            progress.update(done, note)

        results = bench_generalisation.run(model, list(images), folds=folds, views=views, seed=seed,
                                           resamples=resamples,
                                           cache_dir=cache_dir, progress=show, fresh_seed=fresh_seed,
                                           extra_images=extra_images)
    name = (f"generalisation-{model.replace('/', '_')}" + ("" if fresh_seed is None else f"-fresh{fresh_seed}") +
            ("" if extra_images is None else f"-extra-{Path(extra_images).name}"))
    save(folder, "generalisation", name, results,
         bench_generalisation.markdown(results, machine()), as_json)


@bench.command(name="serve")
@OUT
@AS_JSON
@threads_option
@click.option("--seconds", type=click.FloatRange(min=5), default=120, show_default=True, help="Length of the 16-client load.")
@click.option("--fault-seconds", type=click.FloatRange(min=5), default=30, show_default=True,
              help="Length of each half of the stalled/killed-client comparison.")
@click.option("--views", type=click.IntRange(min=1), default=16, show_default=True,
              help="Views per held-out photo for the estimator measurement.")
def serve_bench(out_dir: Path | None, as_json: bool, seconds: float, fault_seconds: float, views: int) -> None:
    """The warm server over a real 1 Mbps + 200 ms link: answer times, end to end, estimator, load, faults.

    Builds the link with network namespaces (root) or a throttling relay, starts `prosemc serve` at its cloud
    end and runs the clients at its edge end. Takes about 8 minutes with the defaults.
    """
    from prosemc.bench import serve as bench_serve

    folder = out_folder(out_dir, "serve")
    results = bench_serve.run(heldout_photos(), seconds=seconds, fault_seconds=fault_seconds, views=views,
                              progress=lambda line: say(f"bench serve: {line}"))
    bench_serve.plot(results, folder / "serve-lite.png")
    del results["estimator_rows"], results["end_to_end_rows"]
    save(folder, "serve", "serve-lite", results, bench_serve.markdown(results, machine(), "serve-lite.png"), as_json)


@bench.command("export")
@OUT
@AS_JSON
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per step.")
@click.option("--calibration", default="builtin", show_default=True, help="Calibration photos of the int8 bundle.")
@threads_option
def export_command(out_dir: Path | None, as_json: bool, repeats: int, calibration: str) -> None:
    """The lite edge bundle vs torch: int8 choices, labels per level, speed, cold start, memory, coder (~15 min).

    Includes the emulated-aarch64 result of `make test-aarch64` (OUT/export-aarch64.json) when present.
    """
    from prosemc.bench import export as bench_export
    from prosemc.progress import Progress

    folder = out_folder(out_dir, "export")
    with Progress("prosemc: bench export", heartbeat=True) as progress:
        results = bench_export.run(heldout_photos(), calibration=calibration, repeats=repeats,
                                   progress=lambda step: progress.advance(note=step))
    bench_export.plot(results, folder / "export.png")
    aarch64_file = folder / "export-aarch64.json"
    aarch64 = json.loads(aarch64_file.read_text()) if aarch64_file.is_file() else None
    save(folder, "export", "export", {**results, "aarch64": aarch64},
         bench_export.markdown(results, machine(), "export.png", aarch64), as_json)
