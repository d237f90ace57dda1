"""An off-the-shelf Hugging Face VLM cut in two: `encode_image` (edge) and `answer` (cloud).

    edge:  PIL RGB --processor's image processor--> pixels --vision part--> EdgeTokens(tokens [N, D] f32, info)
    cloud: question --chat template + processor's placeholder expansion (from info)--> input_ids [1, L]
           EdgeTokens --(projector)--> features [N, D_text] --model's own merge at the image tokens--> LM --> text

The model and processor load lazily on first use, once per instance (the whole checkpoint for now: see
`HFSplitModel` for what loading only the vision weights on the edge would take).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from prosemc.errors import InputError, ModelError
from prosemc.models.base import Answer, EdgeTokens
from prosemc.models.hf.checkpoint import Checkpoint
from prosemc.models.hf.processor import first_line


class HFSplitModel:
    """A split VLM over one checkpoint folder; implements prosemc.models.base.VisionLanguageModel.

    Both halves load the full checkpoint (float32 by default). Loading only the vision weights on the edge
    would mean building the model on the meta device, materialising just the vision tower (+ connector / merger)
    and reading only those tensors from the safetensors shards (`safe_open(...).get_tensor(k)` for the
    `model.vision_*` / `model.connector` / `model.visual` prefixes).
    """

    def __init__(
        self, checkpoint: Checkpoint, *, dtype: str = "float32", device: str = "cpu", max_new_tokens: int = 64
    ) -> None:
        from prosemc.models.hf.families import FAMILY_CLASSES

        self.checkpoint = checkpoint
        self.model_id = checkpoint.model_id
        self.family = FAMILY_CLASSES[checkpoint.family]()
        self.dtype = dtype
        self.device = device
        self.max_new_tokens = max_new_tokens

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """(rows, cols) of the grid each tile's tokens lie on (row-major), or None where it varies (Qwen2-VL)."""
        return self.family.token_grid(self.checkpoint.config)

    def __repr__(self) -> str:
        return f"HFSplitModel({self.model_id!r}, family={self.family.name!r}, folder={str(self.checkpoint.folder)!r})"

    # --- lazy loading -------------------------------------------------------------------------------------

    @cached_property
    def processor(self) -> Any:
        """The checkpoint's own processor (image processor + tokenizer + chat template)."""
        from prosemc.models.hf.processor import load_processor

        return load_processor(self.checkpoint.folder, self.checkpoint.config["model_type"])

    @cached_property
    def model(self) -> Any:
        """The whole model, in eval mode, on `self.device`."""
        import torch
        from transformers import AutoModelForImageTextToText

        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelError(f"unknown dtype {self.dtype!r}; use float32, bfloat16 or float16")
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                self.checkpoint.folder, local_files_only=True, dtype=dtype
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            reason = first_line(exc)
            raise ModelError(f"cannot load the weights of {self.model_id}: {reason}; re-download it") from None
        return model.to(self.device).eval()

    def prepare(self, question: str | None = None) -> None:
        """Load the cloud half (model and processor) now, e.g. while a stream's layers are still arriving."""
        _ = self.model, self.processor

    @cached_property
    def _kwargs(self) -> dict[str, Any]:
        """The processor's own merged per-modality kwargs, as its __call__ would use them."""
        processor = self.processor
        merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs, return_tensors="pt")
        for key in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
            merged["text_kwargs"].pop(key, None)
        return merged

    @cached_property
    def _special_tokens(self) -> list[str]:
        """Control strings a question must not contain: the tokenizer's special tokens and image placeholders."""
        tokenizer = self.processor.tokenizer
        added = [t.content for t in tokenizer.added_tokens_decoder.values() if getattr(t, "special", False)]
        names = [*tokenizer.all_special_tokens, *added, *getattr(self.processor, "all_special_multimodal_tokens", [])]
        return [t for t in dict.fromkeys(names) if isinstance(t, str) and t]

    # --- edge half ----------------------------------------------------------------------------------------

    def encode_image(self, image: Any) -> EdgeTokens:
        """Edge half: RGB PIL image -> EdgeTokens(tokens [N, D] float32, info); never runs the language model."""
        import torch

        image = _rgb(image)
        pixels = self.family.pixel_inputs(self.processor, image, dict(self._kwargs["images_kwargs"]))
        with torch.inference_mode():
            tokens, info = self.family.edge_tokens(self.model, pixels)
        return EdgeTokens(tokens=tokens.float().cpu().numpy(), info=info)

    # --- cloud half ---------------------------------------------------------------------------------------

    def _prompt(self, tokens: EdgeTokens, question: str) -> dict[str, Any]:
        """input_ids [1, L] and attention_mask for `question` with one image of len(tokens) placeholders."""
        processor = self.processor
        if not isinstance(question, str):
            raise InputError(f"the question must be text, got {type(question).__name__}; pass a string")
        specials = [t for t in self._special_tokens if t in question]
        if specials:
            raise InputError(f"the question contains the model's special token {specials[0]!r}; remove it")
        if processor.chat_template is None:
            raise ModelError(f"{self.model_id} has no chat template; use an instruction-tuned checkpoint")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        replacement = processor.replace_image_token(self.family.placeholder_inputs(tokens.info), image_idx=0)
        texts, _ = processor.get_text_with_replacements([text], images_replacements=[replacement])
        encoded = processor.tokenizer(texts, **self._kwargs["text_kwargs"])
        n_slots = int((encoded["input_ids"] == self.model.config.image_token_id).sum())
        if n_slots != tokens.tokens.shape[0]:
            raise ModelError(
                f"the tokens hold {tokens.tokens.shape[0]} image tokens but their info implies {n_slots} for "
                f"{self.model_id}; they were made by another model or with another image processor setting"
            )
        return {k: v.to(self.model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}

    def _tensor(self, tokens: EdgeTokens) -> Any:
        import torch

        array = np.asarray(tokens.tokens)
        width = self.family.token_width(self.model.config)
        if array.ndim != 2 or array.shape[1] != width:
            raise ModelError(
                f"tokens have shape {list(array.shape)} but {self.model_id} takes [N, {width}]; "
                "they were made by another model"
            )
        if not np.isfinite(array).all():
            raise ModelError("tokens contain NaN or infinity; the .psem decode is corrupt, re-send it")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.model.device, self.model.dtype)

    def _split_inputs(self, tokens: EdgeTokens, question: str) -> dict[str, Any]:
        if not isinstance(tokens, EdgeTokens) or not isinstance(tokens.info, dict):
            raise InputError("answer() takes EdgeTokens(tokens [N, D], info dict) as made by encode_image")
        features = self._tensor(tokens)  # [N, D], checked before the prompt is built for N of them
        inputs = self._prompt(tokens, question)
        extra = self.family.forward_kwargs(self.model, self.processor, features, tokens.info, inputs["input_ids"])
        return {**inputs, **extra}

    def answer(self, tokens: EdgeTokens, question: str) -> Answer:
        """Cloud half: tokens [N, D] + question -> greedy answer; never sees pixels."""
        import torch

        with torch.inference_mode():
            inputs = self._split_inputs(tokens, question)
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        new = output[0, inputs["input_ids"].shape[1]:]
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        return Answer(text=text.strip())

    # --- checks -------------------------------------------------------------------------------------------

    def split_logits(self, tokens: EdgeTokens, question: str) -> np.ndarray:
        """Next-token logits [V] float32 of the prompt, through the split path (tokens, not pixels)."""
        import torch

        with torch.inference_mode():
            logits = self.model(**self._split_inputs(tokens, question)).logits
        return logits[0, -1].float().cpu().numpy()

    def reference_logits(self, image: Any, question: str) -> np.ndarray:
        """Next-token logits [V] float32 of the unsplit model's own forward on the processor's pixel_values."""
        import torch

        with torch.inference_mode():
            inputs = self._reference_inputs(image, question)
            logits = self.model(**inputs).logits
        return logits[0, -1].float().cpu().numpy()

    def reference_answer(self, image: Any, question: str) -> Answer:
        """The unsplit model's own greedy answer from pixels (what `answer` must reproduce at lossless settings)."""
        import torch

        with torch.inference_mode():
            inputs = self._reference_inputs(image, question)
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        new = output[0, inputs["input_ids"].shape[1]:]
        return Answer(text=self.processor.tokenizer.decode(new, skip_special_tokens=True).strip())

    def _reference_inputs(self, image: Any, question: str) -> dict[str, Any]:
        processor = self.processor
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[_rgb(image)], text=[text], return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in inputs.items()}


def _rgb(image: Any) -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency of the cloud extra
        raise ModelError("pillow is not installed; install prosemc[cloud]") from None
    if not isinstance(image, Image.Image):
        raise InputError(f"encode_image takes a PIL image, got {type(image).__name__}; open it with PIL first")
    return image.convert("RGB") if image.mode != "RGB" else image
