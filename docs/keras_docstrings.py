"""A Griffe extension that reads tfnode's Keras-format docstrings as Google style.

tfnode's docstrings follow Keras: doctests sit flush left after `Example:` and a
blank line, layers document their call in `Call arguments:`, and parameters that
share a description are listed together (`rtol, atol: ...`). Griffe's Google
parser reads none of these, so before it parses, each docstring is rewritten:

- `Example:` + blank line + flush-left block -> an indented `Examples` section,
  so the doctests render as code (not as `>>>` block quotes);
- `Call arguments:` -> a parameters table titled "Call arguments:" (Google's
  "Other Parameters", which are not checked against the signature);
- `a, b: text` (the names may wrap onto the next line) -> one entry per name,
  each checked against the signature like any other.

Nothing else changes, so every warning of Griffe's parser still fails
`mkdocs build --strict` (after a split entry, the line it names may be a few
lines late).
"""

from __future__ import annotations

import re

import griffe

# A Google section title: `Args:` flush left (the block under it is indented).
_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_PARAMETER_SECTIONS = ("Args", "Arguments", "Call arguments")
_NAMES = r"\*{0,2}\w+(?:, \*{0,2}\w+)+"
_GROUP = re.compile(rf"^(\s+)({_NAMES}):(.*)$")  # `    a, b: text`
_GROUP_WRAPPED = re.compile(rf"^(\s+)({_NAMES}),$")  # `    a, b,` then `c: text`


def _is_section(lines: list[str], i: int) -> bool:
    following = i + 1 < len(lines) and lines[i + 1].startswith(" ")
    return bool(_SECTION.match(lines[i])) and following


def _examples(lines: list[str], i: int, out: list[str]) -> int:
    """Indents the flush-left block after `Example:`; returns the next line."""
    out.append(f"Examples: {lines[i]}")
    i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and not _is_section(lines, i):
        out.append(f"    {lines[i]}" if lines[i].strip() else "")
        i += 1
    return i


def _split_group(lines: list[str], i: int, out: list[str]) -> int:
    """Writes `a, b: text` as `a: text` and `b: text`; returns the next line."""
    line = lines[i]
    wrapped = _GROUP_WRAPPED.match(line)
    if wrapped and i + 1 < len(lines):
        line = f"{wrapped[1]}{wrapped[2]}, {lines[i + 1].strip()}"
        i += 1
    indent, names, first = _GROUP.match(line).groups()
    description = [first]
    i += 1
    while i < len(lines) and lines[i].startswith(indent + " "):
        description.append(lines[i])
        i += 1
    for name in names.split(", "):
        out.extend([f"{indent}{name}:{description[0]}", *description[1:]])
    return i


def keras_to_google(text: str) -> str:
    """Rewrites a Keras-format docstring so that Griffe's Google parser reads it."""
    lines, out = text.split("\n"), []
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_section(lines, i) or line in ("Example:", "Examples:"):
            section = _SECTION.match(line)[1]
        if line in ("Example:", "Examples:"):
            i = _examples(lines, i, out)
        elif line == "Call arguments:":
            out.append("Other Parameters: Call arguments:")
            i += 1
        elif section in _PARAMETER_SECTIONS and (
            _GROUP.match(line) or _GROUP_WRAPPED.match(line)
        ):
            i = _split_group(lines, i, out)
        else:
            out.append(line)
            i += 1
    return "\n".join(out)


class KerasDocstrings(griffe.Extension):
    """Rewrites every docstring with `keras_to_google` before it is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = keras_to_google(obj.docstring.value)
