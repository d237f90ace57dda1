"""Profiles: full headers that both ends already hold, which compact files name by id instead of spelling out.

    profile id   = SHA-256(the profile's canonical header JSON)[:8]   (the JSON a full file with that header carries)
    ProfileStore(folders=[...], profiles=[...]).get(id) -> Profile | None    (NAME.json files, read on first use)

Like a compression dictionary: a cloud that serves one model and codec keeps their profile, and an edge that talks
to it sends 8 bytes of profile id where a full file sends a ~250-byte header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

from prosemc.errors import InputError
from prosemc.format.errors import InvalidHeaderError, PsemError
from prosemc.format.header import PsemHeader, header_from_json
from prosemc.format.spec import DEFAULT_LIMITS, PROFILE_ID_BYTES, Limits


def profile_id(body: bytes) -> bytes:
    """The id of the profile whose canonical header JSON is `body`: the first 8 bytes of its SHA-256."""
    import hashlib  # here, not at import: loading OpenSSL costs a cold `prosemc info` ~20 ms

    return hashlib.sha256(body).digest()[:PROFILE_ID_BYTES]


@dataclass(frozen=True)
class Profile:
    """A header known to both ends, its canonical JSON, its id, and a name and origin to show people."""

    header: PsemHeader
    body: bytes  # canonical header JSON; the id hashes exactly these bytes
    id: bytes  # 8 bytes
    name: str
    source: str  # "built-in", a file path, or "given"

    @classmethod
    def of(cls, header: PsemHeader, name: str = "", source: str = "given",
           limits: Limits = DEFAULT_LIMITS) -> "Profile":
        """The profile that is exactly `header` (validated like a header a reader gets)."""
        body = header.to_json_bytes(limits)
        pid = profile_id(body)
        return cls(header, body, pid, name or pid.hex(), source)

    @classmethod
    def from_json(cls, data: bytes, name: str, source: str, limits: Limits = DEFAULT_LIMITS) -> "Profile":
        """A profile from header JSON (any spacing or key order; the id is of its canonical form)."""
        return cls.of(header_from_json(data, limits), name, source, limits)

    @property
    def hex(self) -> str:
        return self.id.hex()

    @cached_property
    def document(self) -> dict[str, Any]:
        """The header as a JSON object, parsed once (compact files patch it; never modify it)."""
        return json.loads(self.body)


class ProfileStore:
    """Profiles by id: `NAME.json` files in `folders` (read on first use; missing folders are skipped) and
    `profiles` given directly. The first profile seen for an id wins; two different profiles with one id are refused."""

    def __init__(self, folders: Iterable[Path | str] = (), profiles: Iterable[Profile] = (),
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.folders = [Path(folder) for folder in folders]
        self._given = list(profiles)
        self._limits = limits
        self._by_id: dict[bytes, Profile] | None = None

    def with_profiles(self, *profiles: Profile) -> "ProfileStore":
        """A store that also holds `profiles` (ahead of this one's)."""
        return ProfileStore(self.folders, [*profiles, *self._given], self._limits)

    def _read_file(self, path: Path) -> Profile:
        try:
            with open(path, "rb") as stream:
                data = stream.read(self._limits.header_bytes + 1)
        except OSError as exc:
            raise InputError(f"cannot read profile file {path}: {exc.strerror}; fix its permissions or remove it") from None
        if len(data) > self._limits.header_bytes:
            raise InvalidHeaderError(f"profile file {path} is over the {self._limits.header_bytes}-byte header cap; remove it")
        try:
            return Profile.from_json(data, path.stem, str(path), self._limits)
        except PsemError as exc:
            problem = str(exc).split("; ")[0]
            raise InvalidHeaderError(f"profile file {path} is not a valid .psem header; fix or remove it ({problem})") from None

    def _profiles(self) -> dict[bytes, Profile]:
        if self._by_id is None:
            files = [path for folder in self.folders if folder.is_dir() for path in sorted(folder.glob("*.json"))]
            by_id: dict[bytes, Profile] = {}
            for profile in [*self._given, *map(self._read_file, files)]:
                known = by_id.setdefault(profile.id, profile)
                if known.body != profile.body:
                    raise InvalidHeaderError(
                        f"profiles {known.source} and {profile.source} differ but share the id {profile.hex}; "
                        "remove one of them"
                    )
            self._by_id = by_id
        return self._by_id

    def get(self, pid: bytes) -> Profile | None:
        """The profile with this 8-byte id, or None."""
        return self._profiles().get(bytes(pid))

    def find(self, key: str) -> Profile | None:
        """The profile named `key`, or whose hex id is `key`."""
        key = key.strip().lower()
        for profile in self:
            if key in (profile.name.lower(), profile.hex):
                return profile
        return None

    def __iter__(self) -> Iterator[Profile]:
        return iter(list(self._profiles().values()))

    def __len__(self) -> int:
        return len(self._profiles())
