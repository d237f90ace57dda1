"""Model registry: the built-in `lite` model, or any supported Hugging Face VLM by hub id or local folder.

    load_model("lite")                                  -> LiteModel (EfficientNet-Lite0 + label bridge + SmolLM2)
    load_model("lite-dense")                            -> LiteDenseModel (split after stage 5: dense tokens [196, 112])
    load_model("HuggingFaceTB/SmolVLM-256M-Instruct")   -> split Hugging Face VLM
"""

from __future__ import annotations

from prosemc.models.base import Answer, EdgeTokens, VisionLanguageModel

DEFAULT_MODEL = "lite"
BUILTIN_MODELS = ("lite", "lite-dense")  # models that need no download; `query` finds them from the header


def load_model(name: str = DEFAULT_MODEL) -> VisionLanguageModel:
    """A split model by name; halves load lazily on first use."""
    if name == "lite":
        from prosemc.models.lite import LiteModel

        return LiteModel()
    if name == "lite-dense":
        from prosemc.models.lite_dense import LiteDenseModel

        return LiteDenseModel()
    from prosemc.models.hf import load_hf_model

    return load_hf_model(name)


__all__ = ["Answer", "EdgeTokens", "VisionLanguageModel", "DEFAULT_MODEL", "BUILTIN_MODELS", "load_model"]
