"""The cloud half kept warm for the server: one model, answers serialised on one thread, timings, weight hashes.

    CloudModel("lite", llm=True)
        .answer(edge_tokens, question, llm)   blocking; the server runs it on the model thread (one at a time)
        .describe()                            what GET /v1/models reports
Decoding and quality estimates are numpy and run on a small pool beside it, so streams never wait on them.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prosemc.errors import InputError
from prosemc.models import Answer, EdgeTokens, load_model

TIMING_WINDOW = 64  # recent answers per mode whose median /v1/models reports


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def weight_files(model: Any) -> dict[str, Path]:
    """name -> path of the weight files that define `model` (lite: encoder, codec, language model)."""
    if getattr(model, "model_id", None) == "lite":
        from prosemc.codec.metaae import default_weights_path
        from prosemc.models.lite import weights_file
        from prosemc.models.llm import gguf_file

        return {"efficientnet-lite0": weights_file(), "metaae": default_weights_path(), "smollm2": gguf_file()}
    checkpoint = getattr(model, "checkpoint", None)
    folder = getattr(checkpoint, "folder", None)
    if folder is None:
        return {}
    return {path.name: path for path in sorted(Path(folder).glob("*.safetensors"))}


class CloudModel:
    """One loaded model serving answers; `llm=False` serves label-only replies and never loads the language model."""

    def __init__(self, name: str, *, llm: bool = True, decode_threads: int = 4) -> None:
        self.model = load_model(name)
        self.model_id = self.model.model_id
        self.llm = llm
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="prosemc-model")
        self.decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="prosemc-decode")
        self._times: dict[str, deque[float]] = {"labels": deque(maxlen=TIMING_WINDOW), "llm": deque(maxlen=TIMING_WINDOW)}
        self._lock = threading.Lock()
        self.weights_sha256 = {name: sha256_file(path) for name, path in weight_files(self.model).items()}

    def warm(self) -> float:
        """Load every part a reply needs and answer once (so the first client waits for nothing); seconds taken."""
        start = time.perf_counter()
        if self.model_id == "lite":
            import numpy as np

            tokens = EdgeTokens(np.zeros((49, 1280), dtype=np.float32))
            self.answer(tokens, "what is shown?", llm=False)
            if self.llm:
                self.answer(tokens, "what is shown?", llm=True)
        with self._lock:  # loading times are not answer times
            for times in self._times.values():
                times.clear()
        return time.perf_counter() - start

    def answer(self, tokens: EdgeTokens, question: str, llm: bool) -> Answer:
        """Answer on the calling thread (the server calls it on `model_thread`); records the time it took."""
        start = time.perf_counter()
        if llm and not self.llm:
            raise InputError("this server answers label-only (it runs no language model); ask for a label-only reply (llm=0)")
        if llm:
            answer = self.model.answer(tokens, question)
        else:
            classify = getattr(self.model, "classify", None)
            if classify is None:
                raise InputError(f"model {self.model_id} has no label bridge, so no label-only reply; ask with llm=1")
            from prosemc.models.lite import describe

            labels = classify(tokens)
            answer = Answer(text=f"The photo most likely shows {describe(labels)}.", labels=labels)
        with self._lock:
            self._times["llm" if llm else "labels"].append(time.perf_counter() - start)
        return answer

    def answer_ms(self) -> dict[str, float | None]:
        """Median recent answer time per mode (ms), None before the first answer of that mode."""
        with self._lock:
            return {mode: round(statistics.median(times) * 1e3, 2) if times else None
                    for mode, times in self._times.items()}

    def describe(self) -> dict[str, Any]:
        from prosemc.codec import CODECS, codec_record
        from prosemc.pipeline import default_codec

        return {
            "model": self.model_id, "llm": self.llm, "default_codec": codec_record(default_codec(self.model_id)).codec_id,
            "codecs": sorted(record.codec_id for record in CODECS),
            "weights_sha256": self.weights_sha256, "answer_ms": self.answer_ms(),
        }

    def close(self) -> None:
        self.model_thread.shutdown(wait=False, cancel_futures=True)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
