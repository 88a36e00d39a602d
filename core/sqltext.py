"""Reading SQL text as PostgreSQL prints it or as a migration writes it: parts at the top level,
outside parentheses and quoted literals or identifiers. Not a parser: what it cannot read is the
caller's to treat as unknown."""

from __future__ import annotations

__all__ = ["split_top_level", "unwrap"]


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """`text` cut at each `separator` (case-insensitive) outside parentheses and quotes, each
    part stripped, empty parts left out: `a, f(b, c), 'd,e'` → [a, f(b, c), 'd,e']."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    width, upper = len(separator), separator.upper()
    while i < len(text):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote  # '' inside a literal closes and reopens it
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text[i : i + width].upper() == upper:
            parts.append(text[start:i])
            start = i = i + width
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def unwrap(expression: str) -> str:
    """`expression` without the parentheses around all of it: `((a) AND (b))` → `(a) AND (b)`."""
    text = expression.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0
