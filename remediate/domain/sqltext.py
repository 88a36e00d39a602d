"""Reading SQL text as PostgreSQL prints it or as a migration writes it: parts at the top level,
outside parentheses and quoted literals or identifiers. Not a parser: what it cannot read is the
caller's to treat as unknown."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["split_top_level", "unwrap"]


def _scan(text: str) -> Iterator[tuple[int, int, bool]]:
    """(index, parenthesis depth before it, inside a quote) for each character of `text`, then
    once more at `len(text)` with the depth at the end."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        yield i, depth, bool(quote)
        if quote:
            quote = "" if ch == quote else quote  # '' inside a literal closes and reopens it
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
    yield len(text), depth, bool(quote)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """`text` cut at each `separator` (case-insensitive) outside parentheses and quotes, each
    part stripped, empty parts left out: `a, f(b, c), 'd,e'` → [a, f(b, c), 'd,e']."""
    parts, start, upper = [], 0, separator.upper()
    for i, depth, quoted in _scan(text):
        if (
            i >= start
            and depth == 0
            and not quoted
            and text[i : i + len(separator)].upper() == upper
        ):
            parts.append(text[start:i])
            start = i + len(separator)
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _balanced(text: str) -> bool:
    """No `)` closes more than was opened, and all that opened is closed (quotes respected)."""
    depths = [depth for _, depth, _ in _scan(text)]
    return min(depths) >= 0 and depths[-1] == 0


def unwrap(expression: str) -> str:
    """`expression` without the parentheses around all of it: `((a) AND (b))` → `(a) AND (b)`."""
    text = expression.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text
