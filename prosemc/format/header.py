"""The `.psem` header: the self-describing JSON block that says how to decode the layers that follow.

    {"encoder": "lite", "tokens": {"shape": [49, 1280], "dtype": "float32"},
     "codec": {"id": ..., "model_sha256": null | hex, "params": {...}}, "entropy": {"id": ..., ...},
     "layers": 4, "metadata": {...}}

Schema: formats/psem-header.schema.json. Unknown top-level keys are kept and ignored (minor-version growth).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from prosemc.format.errors import InvalidHeaderError
from prosemc.format.spec import DEFAULT_LIMITS, Limits

TOKEN_DTYPES = ("float32", "float16", "bfloat16")
MAX_INTEGER_DIGITS = 19  # header integers stay within 64 bits: no 4,300-digit ValueError, no float overflow later
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KNOWN_KEYS = ("encoder", "tokens", "codec", "entropy", "layers", "metadata")


@dataclass(frozen=True)
class PsemHeader:
    """What a decoder needs: encoder id, token grid [N, D] and dtype, codec + entropy coder, layer count."""

    encoder: str
    token_shape: tuple[int, ...]
    codec: dict[str, Any]
    entropy: dict[str, Any]
    layers: int
    token_dtype: str = "float32"
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys unknown to this version

    @property
    def codec_id(self) -> str:
        return str(self.codec["id"])

    @property
    def codec_params(self) -> dict[str, Any]:
        return dict(self.codec.get("params") or {})

    def to_dict(self) -> dict[str, Any]:
        """The header as JSON-able data; defaults (float32 dtype, null model hash, empty metadata) are left out."""
        tokens: dict[str, Any] = {"shape": list(self.token_shape)}
        if self.token_dtype != "float32":
            tokens["dtype"] = self.token_dtype
        codec = {k: v for k, v in self.codec.items() if not (k == "model_sha256" and v is None)}
        out = {**self.extra, "encoder": self.encoder, "tokens": tokens, "codec": codec, "entropy": self.entropy,
               "layers": self.layers}
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    def to_json_bytes(self, limits: Limits = DEFAULT_LIMITS) -> bytes:
        """Canonical UTF-8 JSON (sorted keys, no spaces); validated by the same rules a reader applies."""
        try:
            body = canonical_json(self.to_dict())
        except (TypeError, ValueError) as exc:
            raise InvalidHeaderError(f"header is not JSON-serialisable ({exc}); pass plain str/int/float/list/dict values") from None
        header_from_json(body, limits)  # a writer never produces what a reader would refuse
        return body


def canonical_json(value: Any) -> bytes:
    """JSON as every writer emits it: sorted keys, no spaces, ASCII only, no NaN or infinity (ValueError)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _fail(problem: str) -> InvalidHeaderError:
    return InvalidHeaderError(f"invalid .psem header: {problem}; the file was not written by a conforming encoder, re-encode it")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise _fail(f"duplicate key {sorted(k for k in keys if keys.count(k) > 1)[0]!r}")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise _fail(f"non-finite number {name}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _fail(f"integer {text[:12]}... has {len(text.lstrip('-'))} digits, more than {MAX_INTEGER_DIGITS}")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _fail(f"number {text[:24]} overflows to infinity")
    return value


def _check_strings(obj: Any) -> None:
    """InvalidHeaderError for a string (key or value, at any depth) that is not valid Unicode (a lone surrogate)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _fail(f"string {item[:32]!r} holds a lone surrogate ({item[exc.start]!r})") from None


def header_from_json(body: bytes, limits: Limits = DEFAULT_LIMITS) -> PsemHeader:
    """Parse and validate the header JSON bytes; raises InvalidHeaderError naming the first bad field."""
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                         parse_int=_bounded_int, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise _fail("not UTF-8") from None
    except RecursionError:
        raise _fail("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise _fail(f"not JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(obj, dict):
        raise _fail("top level is not a JSON object")
    _check_strings(obj)
    missing = [k for k in _KNOWN_KEYS[:5] if k not in obj]
    if missing:
        raise _fail(f"missing field {missing[0]!r}")

    encoder = obj["encoder"]
    if not isinstance(encoder, str) or not 0 < len(encoder) <= 512:
        raise _fail("'encoder' must be a non-empty string of at most 512 characters")

    tokens = obj["tokens"]
    if not isinstance(tokens, dict) or "shape" not in tokens:
        raise _fail("'tokens' must be an object with 'shape' and 'dtype'")
    shape = tokens["shape"]
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(type(n) is int and 1 <= n <= 2**31 - 1 for n in shape)
    ):
        raise _fail("'tokens.shape' must be a list of 1 to 4 integers in [1, 2^31-1]")
    dtype = tokens.get("dtype", "float32")
    if dtype not in TOKEN_DTYPES:
        raise _fail(f"'tokens.dtype' is {dtype!r}, expected one of {', '.join(TOKEN_DTYPES)}")

    codec = obj["codec"]
    if not isinstance(codec, dict) or not isinstance(codec.get("id"), str) or not codec["id"]:
        raise _fail("'codec' must be an object with a non-empty string 'id'")
    sha = codec.get("model_sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise _fail("'codec.model_sha256' must be null or 64 lower-case hex digits")
    if not isinstance(codec.get("params", {}), dict):
        raise _fail("'codec.params' must be an object")

    entropy = obj["entropy"]
    if not isinstance(entropy, dict) or not isinstance(entropy.get("id"), str) or not entropy["id"]:
        raise _fail("'entropy' must be an object with a non-empty string 'id'")

    layers = obj["layers"]
    if type(layers) is not int or not 0 <= layers <= limits.layers:
        raise _fail(f"'layers' must be an integer in [0, {limits.layers}]")

    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail("'metadata' must be an object")

    return PsemHeader(
        encoder=encoder,
        token_shape=tuple(shape),
        token_dtype=dtype,
        codec={**codec, "model_sha256": sha},
        entropy=entropy,
        layers=layers,
        metadata=metadata,
        extra={k: v for k, v in obj.items() if k not in _KNOWN_KEYS},
    )
