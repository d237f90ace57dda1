"""Many inputs in one process: input lists, default output names, and a run that survives per-item failures.

    prosemc encode a.jpg b.jpg --out-dir out/          a.jpg -> out/a.psem, b.jpg -> out/b.psem
    find photos -name '*.jpg' | prosemc encode --from - --out-dir out/
    prosemc encode photo.jpg                            photo.jpg -> photo.psem beside it

Every output name is derived and checked before any model loads (two inputs onto one name, an existing file
without --force). A failing item is reported on stderr ("prosemc: error: NAME: ...") and the others go on; the run
ends with a summary and exit code 0 (all succeeded), 3 (some failed) or 2 (all failed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from prosemc.cli import PartialFailure, UserError
from prosemc.cli.console import PREFIX, input_failure, printable, say, verbosity
from prosemc.cli.io import open_input
from prosemc.errors import InputError, ProsemcError
from prosemc.text import plural

PSEM_SUFFIX = ".psem"


def read_list(source: str) -> list[str]:
    """The non-empty lines of SOURCE (a file, or - for stdin): one input path per line, kept as written."""
    with open_input(source) as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{'standard input' if source == '-' else source} is not a UTF-8 list of paths; give one "
                         "path per line") from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def default_output(image: str, out_dir: str | None) -> Path:
    """photo.jpg -> photo.psem, beside the image or in out_dir."""
    if image == "-":
        raise InputError("an image read from standard input has no name to derive the output's from; give -o FILE "
                         "(or -o - for stdout)")
    source = Path(image)
    folder = Path(out_dir) if out_dir is not None else source.parent
    return folder / (source.stem + PSEM_SUFFIX)


def planned_outputs(images: Sequence[str], out_dir: str | None, force: bool) -> list[Path]:
    """The output of each image (see default_output), refused before any work when two images would share one,
    when an output exists and `force` is off, or when an output is an input."""
    outputs = [default_output(image, out_dir) for image in images]
    seen: dict[Path, str] = {}
    for image, output in zip(images, outputs):
        key = output.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {image} would both be written to {output}; rename one, or encode them "
                             "into different folders")
        seen[key] = image
    inputs = {Path(image).resolve() for image in images}
    existing = [output for output in outputs if output.exists() or output.is_symlink()]
    clash = next((output for output in outputs if output.resolve() in inputs), None)
    if clash is not None:
        raise InputError(f"the output {clash} would be one of the inputs; choose another --out-dir")
    if existing and not force:
        more = f" (and {plural(len(existing) - 1, 'other')})" if len(existing) > 1 else ""
        elsewhere = "-o FILE or --out-dir DIR" if len(images) == 1 else "--out-dir DIR"
        raise InputError(f"{existing[0]}{more} already exists; pass --force to overwrite, or write elsewhere "
                         f"({elsewhere})")
    return outputs


class BatchRun:
    """Run one step per item, report each failure as it happens and go on; `finish` prints the summary.

    Items are named by their input; results are kept for the JSON report (a failure as {"input", "error"}).
    """

    def __init__(self, verb: str, noun: str, total: int) -> None:
        from prosemc.progress import Progress

        self.verb, self.noun, self.total = verb, noun, total
        self.results: list[dict[str, Any]] = []
        self.failed: list[str] = []
        self.started = time.perf_counter()
        self.progress = Progress(f"{PREFIX}{verb}", total=total, heartbeat=True)

    def run(self, name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """The result of step() for input NAME, or None when it failed with a ProsemcError (reported, counted)."""
        try:
            result = {k: v for k, v in step().items() if k not in ("schema", "command")}
        except ProsemcError as error:
            message = input_failure(name, error)
            self.failed.append(name)
            self.results.append({"input": name, "error": message})
            self.progress.log(f"{PREFIX}error: {printable(message)}")
            self.progress.advance(note=name)
            return None
        self.results.append(result)
        self.progress.advance(note=name)
        return result

    def note(self, text: str) -> None:
        """A line shown only with -v (above the progress line)."""
        if verbosity() > 0:
            self.progress.log(PREFIX + printable(text))

    def close(self) -> None:
        """Clear the progress line (the summary follows)."""
        self.progress.close(failed=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def counts(self) -> dict[str, int]:
        return {"succeeded": len(self.results) - len(self.failed), "failed": len(self.failed)}

    def finish(self, summary: str) -> None:
        """Say `summary`; exit with code 3 when some items failed, 2 when all did."""
        say(summary)
        if not self.failed:
            return
        names = ", ".join(self.failed[:3]) + (", ..." if len(self.failed) > 3 else "")
        if len(self.failed) == len(self.results):
            if len(self.failed) == 1:
                raise UserError(f"{names} failed; see the error above")
            raise UserError(f"all {plural(len(self.failed), self.noun)} failed ({names}); see the errors above")
        raise PartialFailure(f"{len(self.failed)} of {plural(len(self.results), self.noun)} failed ({names}); the "
                             "others succeeded")
