"""Words in messages: counted nouns with the right plural ("1 layer", "2 layers", "1 entry", "3 entries")."""

from __future__ import annotations

_IRREGULAR = {"entry": "entries", "query": "queries"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'COUNT NOUN' with NOUN in the plural unless COUNT is 1 (`many` overrides the plural form)."""
    if count == 1:
        return f"{count} {noun}"
    if many is None:
        last = noun.rsplit(" ", 1)[-1]
        many = noun[: len(noun) - len(last)] + _IRREGULAR.get(last, last + ("es" if last.endswith(("s", "x", "sh", "ch"))
                                                                            else "s"))
    return f"{count} {many}"
