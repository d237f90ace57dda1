"""Tiny, randomly initialised checkpoints of real Hugging Face VLM classes, saved to a folder, for tests.

    build_tiny_llava(dir)    LlavaForConditionalGeneration   CLIP tower 32 px / patch 8  -> 16 tokens [16, 32]
    build_tiny_idefics3(dir) Idefics3ForConditionalGeneration 32 px tiles / patch 4, shuffle x2 -> 16 per tile [., 48]
    build_tiny_smolvlm(dir)  the same as SmolVLMForConditionalGeneration (model_type "smolvlm")
    build_tiny_qwen2_vl(dir) Qwen2VLForConditionalGeneration  patch 4, merge 2 -> (h/8)*(w/8) tokens [., 48]

Each folder holds config, safetensors weights, a processor (image processor + a byte-level BPE tokenizer built
in code, with the family's special tokens and a chat template modelled on the real checkpoint's), so it loads
by path exactly as a downloaded checkpoint would. Nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SEED = 0


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny matrices: thread start-up costs more than the maths, badly so on a busy 2-core machine. (Autouse in
    every test module that imports it.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def byte_tokenizer(
    special: list[str], *, bos: str | None, eos: str, pad: str, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE without merges (256 byte symbols) plus `special` tokens: any text round-trips."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    names = list(dict.fromkeys([*(x for x in (bos, eos, pad) if x), *special]))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in names])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad, chat_template=chat_template
    )
    return tokenizer


def _ids(tokenizer: PreTrainedTokenizerFast, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _save(
    model: torch.nn.Module, processor: object | None, folder: Path, eos_id: int, pad_id: int, bos_id: int | None
) -> Path:
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    if bos_id is not None:
        model.generation_config.bos_token_id = bos_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


# --- LLaVA-1.5 -------------------------------------------------------------------------------------------

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_llava(folder: Path) -> Path:
    """LLaVA-1.5 shape in miniature: CLIP tower (width 32, 2 layers) -> 2-layer MLP projector -> Llama (width 64)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = byte_tokenizer(["<image>"], bos="<s>", eos="</s>", pad="<pad>", chat_template=LLAVA_TEMPLATE)
    bos, eos, pad, image = _ids(tokenizer, "<s>", "</s>", "<pad>", "<image>")
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=512, bos_token_id=bos, eos_token_id=eos,
        pad_token_id=pad,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image, image_seq_length=16,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    )
    return _save(model, processor, folder, eos, pad, bos)


# --- SmolVLM / Idefics3 ----------------------------------------------------------------------------------

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_SPECIALS = [
    "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]


def build_tiny_idefics3(folder: Path, *, smolvlm_class: bool = False) -> Path:
    """SmolVLM shape in miniature: SigLIP-style tower 32 px tiles / patch 4 (64 patches) -> pixel shuffle x2
    -> 16 tokens of width 48 per tile; images up to 64 px are cut into 32 px tiles plus a global view.

    `smolvlm_class` builds SmolVLMForConditionalGeneration (model_type "smolvlm", as SmolVLM2 checkpoints)
    instead of Idefics3ForConditionalGeneration (as SmolVLM-256M/500M/2.2B), with the same Idefics3Processor.
    """
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor, LlamaConfig

    if smolvlm_class:
        from transformers import SmolVLMConfig as Idefics3Config
        from transformers import SmolVLMForConditionalGeneration as Idefics3ForConditionalGeneration
        from transformers import SmolVLMVisionConfig as Idefics3VisionConfig
    else:
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig

    tokenizer = byte_tokenizer(
        IDEFICS3_SPECIALS, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>",
        chat_template=SMOLVLM_TEMPLATE,
    )
    bos, eos, pad, image = _ids(tokenizer, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>", "<image>")
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=4,
    )
    text = LlamaConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=1024, bos_token_id=bos, eos_token_id=eos,
        pad_token_id=pad,
    )
    config = Idefics3Config(vision_config=vision, text_config=text, image_token_id=image, scale_factor=2)
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(config).eval()
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16, chat_template=SMOLVLM_TEMPLATE,
    )
    return _save(model, processor, folder, eos, pad, bos)


# --- Qwen2-VL --------------------------------------------------------------------------------------------

QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """Qwen2-VL shape in miniature: patch 4 (x2 frames), tower width 32, merger 2x2 -> tokens of width 48;
    dynamic resolution between 16x16 and 64x64 px in steps of 8, so N = (h/8) * (w/8)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = byte_tokenizer(
        QWEN2_VL_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", chat_template=QWEN2_VL_TEMPLATE,
    )
    eos, pad, image, video, start, end = _ids(
        tokenizer, "<|im_end|>", "<|endoftext|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    vision = {
        "depth": 2, "embed_dim": 32, "hidden_size": 48, "mlp_ratio": 2, "num_heads": 2, "patch_size": 4,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    }
    text = {
        "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]},
        "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad,
    }
    config = Qwen2VLConfig(
        vision_config=vision, text_config=text, image_token_id=image, video_token_id=video,
        vision_start_token_id=start, vision_end_token_id=end,
    )
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}, patch_size=4, temporal_patch_size=2, merge_size=2,
    )
    # Saved as the Qwen/Qwen2-VL-*-Instruct repos are laid out (preprocessor_config.json naming the processor
    # class, chat_template.json, tokenizer files): Qwen2VLProcessor itself can't be built here without
    # torchvision, which its video half needs.
    _save(model, None, folder, eos, pad, None)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    preprocessor = folder / "preprocessor_config.json"
    preprocessor.write_text(
        json.dumps({**json.loads(preprocessor.read_text()), "processor_class": "Qwen2VLProcessor"}, indent=2)
    )
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_VL_TEMPLATE}, indent=2))
    return folder


def build_tiny_smolvlm(folder: Path) -> Path:
    """build_tiny_idefics3 with the SmolVLM model class (SmolVLMProcessor itself needs num2words + torchvision)."""
    return build_tiny_idefics3(folder, smolvlm_class=True)
