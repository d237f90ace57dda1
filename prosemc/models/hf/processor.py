"""Load a checkpoint's own processor offline; fall back to its image+text half when the video half can't load.

Qwen2-VL's (and SmolVLM2's) processor also holds a video processor, which transformers 5 builds only with
torchvision installed. prosemc never feeds video, so without torchvision it builds the same processor class
minus its video attribute: every image and text method (chat template, placeholder expansion, tokenisation,
mm_token_type_ids) is still the processor's own code.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from prosemc.errors import ModelError


def _image_only_class(processor_class: type) -> type:
    """A subclass of `processor_class` whose sub-processors are all but the video processor."""

    params = list(inspect.signature(processor_class.__init__).parameters)[1:]  # without self
    video_params = [(i, name) for i, name in enumerate(params) if "video" in name]

    def get_attributes(cls: type) -> list[str]:
        return [a for a in super(image_only, cls).get_attributes() if "video" not in a]

    def from_args_and_dict(cls: type, args: list, processor_dict: dict, **kwargs: Any) -> Any:
        args = list(args)
        for index, _ in video_params:  # the video argument, required by some __init__s, becomes None
            if index == len(args):
                args.append(None)
        return super(image_only, cls).from_args_and_dict(args, processor_dict, **kwargs)

    image_only = type(
        f"{processor_class.__name__}ImageOnly",
        (processor_class,),
        {"get_attributes": classmethod(get_attributes), "from_args_and_dict": classmethod(from_args_and_dict)},
    )
    return image_only


def load_processor(folder: Path, model_type: str) -> Any:
    """The processor saved with the checkpoint in `folder` (image-only when video support is unavailable)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    except ImportError as exc:
        if "video" not in str(exc).lower():
            raise ModelError(f"cannot load the processor in {folder}: {first_line(exc)}") from None
        first_error = exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = first_line(exc)
        raise ModelError(f"cannot load the processor in {folder}: {reason}; re-download the checkpoint") from None

    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    processor_class = getattr(transformers, name, None) if isinstance(name, str) else None
    if processor_class is None:
        raise ModelError(f"cannot load the processor in {folder}: {first_line(first_error)}")
    try:
        return _image_only_class(processor_class).from_pretrained(folder, local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot load the processor in {folder}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line errors."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__
