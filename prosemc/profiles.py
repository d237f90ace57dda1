"""Which profiles this install knows, and which profile a header's compact form names.

    profile_of(header)   the header less what changes per image (metadata; a codec's per-image params)
    default_store()      built-in profiles (prosemc/data/profiles: the lite model with every codec)
                         + the user's folder ($PROSEMC_PROFILES, default ~/.config/prosemc/profiles)
    load_profile(arg)    a profile from a profile JSON file, a full .psem, or a name / id in a store

    python -m prosemc.profiles    # rewrites prosemc/data/profiles/ from the built-in model and codecs
"""

from __future__ import annotations

import os
from pathlib import Path

from prosemc.codec import CODECS, record_for_id
from prosemc.errors import InputError
from prosemc.format import MAGIC, PsemHeader, PsemReader, Profile, ProfileStore
from prosemc.format.spec import COMPACT_MAGIC

BUILTIN = "built-in"


def builtin_folder() -> Path:
    """The packaged profile folder (beside this module: importlib.resources would cost a cold start ~10 ms)."""
    return Path(__file__).resolve().parent / "data" / "profiles"


def user_folder() -> Path:
    """Where `prosemc profiles add` keeps profiles: $PROSEMC_PROFILES, else $XDG_CONFIG_HOME/prosemc/profiles."""
    if os.environ.get("PROSEMC_PROFILES"):
        return Path(os.environ["PROSEMC_PROFILES"])
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "prosemc" / "profiles"


def default_store(*extra: Profile) -> ProfileStore:
    """The profiles this install knows: `extra` first, then the built-in ones, then the user's folder."""
    return ProfileStore([builtin_folder(), user_folder()], extra)


def source_label(profile: Profile) -> str:
    """Where a profile comes from, for people: "built-in", or the file it was read from."""
    return BUILTIN if Path(profile.source).parent == builtin_folder() else profile.source


def profile_of(header: PsemHeader) -> PsemHeader:
    """The profile a compact file of `header` names: the header without its metadata and without the params its
    codec changes per image, so one profile serves every image of a model and codec."""
    record = record_for_id(header.codec_id)
    codec = dict(header.codec)
    if record is not None and record.per_image_params and "params" in codec:
        codec["params"] = {k: v for k, v in header.codec_params.items() if k not in record.per_image_params}
    return PsemHeader(header.encoder, header.token_shape, codec, header.entropy, header.layers, header.token_dtype,
                      metadata={}, extra=header.extra)


def load_profile(argument: str, store: ProfileStore) -> Profile:
    """A profile named by a path (profile JSON, or a full .psem whose header gives it) or by a name / id in `store`."""
    path = Path(argument)
    if not path.is_file():
        found = store.find(argument)
        if found is None:
            raise InputError(f"no profile file and no known profile named {argument!r}; pass a profile JSON file, a "
                             "full .psem, or a name or id that `prosemc profiles` lists")
        return found
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; check the path") from None
    if data.startswith(COMPACT_MAGIC):
        raise InputError(f"{path} is a compact .psem, which names a profile instead of holding one; pass a full .psem "
                         "or a profile JSON file")
    if data.startswith(MAGIC):
        header = PsemReader(data).header
        assert header is not None
        return Profile.of(profile_of(header), source=str(path))
    return Profile.from_json(data, path.stem, str(path))


def builtin_profiles() -> dict[str, PsemHeader]:
    """name -> profile of each built-in model (`lite`, `lite-dense`) with every registered codec (run on zero tokens)."""
    import numpy as np

    from prosemc.codec import make_codec
    from prosemc.models import lite, lite_dense

    profiles = {}
    for model, (n, d) in (("lite", (lite.GRID**2, lite.TOKEN_DIM)), ("lite-dense", (lite_dense.GRID**2, lite_dense.TOKEN_DIM))):
        tokens = np.zeros((n, d), np.float32)
        for record in CODECS:
            codec = make_codec(record.name, **({"model": model} if record.learned else {}))
            encoded, described = codec.encode(tokens), codec.describe()
            header = PsemHeader(model, tokens.shape, {**described["codec"], "params": encoded.params},
                                described["entropy"], layers=len(encoded.layers))
            profiles[f"{model}-{record.name}"] = profile_of(header)
    return profiles


def write_builtin_profiles(folder: Path | None = None) -> list[Path]:
    """Rewrite the packaged profile files (one canonical header JSON per profile); returns their paths."""
    folder = folder or builtin_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    paths = []
    for name, header in builtin_profiles().items():
        path = folder / f"{name}.json"
        path.write_bytes(header.to_json_bytes())
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_builtin_profiles():
        print(written)
