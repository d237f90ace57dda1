"""Words in messages: counted nouns with the right plural ("1 layer", "2 layers", "1 entry", "3 entries")."""

from __future__ import annotations

_IRREGULAR = {"entry": "entries", "query": "queries", "class": "classes"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'COUNT NOUN' with NOUN in the plural unless COUNT is 1 (`many` overrides the plural form)."""
    return f"{count} {noun if count == 1 else (many or _IRREGULAR.get(noun, noun + 's'))}"
