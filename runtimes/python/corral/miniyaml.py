"""The YAML that seed 002's ``plugin.yaml`` uses, read without a YAML
library (the runtime is stdlib only): block mappings and sequences,
``- key: value`` items, flow lists and maps of scalars, quoted and plain
scalars, ``|``/``>`` block text and comments. Anything else (anchors, tags,
multi-document streams) is an error naming the line; the supervisor reads
the manifest with a full parser, so this reader only feeds the plugin's
``self.manifest``."""

from __future__ import annotations

import json
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")


class YamlError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


class _Line:
    __slots__ = ("indent", "text", "number")

    def __init__(self, indent: int, text: str, number: int) -> None:
        self.indent = indent
        self.text = text
        self.number = number


def loads(text: str) -> Any:
    raw = text.splitlines()
    lines: list[_Line] = []
    for number, line in enumerate(raw, 1):
        body = _strip_comment(line).rstrip()
        if not body.strip() or body.strip() == "---":
            continue
        if body.lstrip(" ").startswith("\t") or "\t" in body[: len(body) - len(body.lstrip())]:
            raise YamlError(number, "tabs are not allowed in indentation")
        if body.strip().startswith(("&", "*", "!", "%")) or body.strip() == "...":
            raise YamlError(number, "anchors, aliases, tags and directives are not supported")
        lines.append(_Line(len(body) - len(body.lstrip(" ")), body.strip(), number))
    if not lines:
        return None
    parser = _Parser(lines, raw)
    value = parser.node(0, lines[0].indent)
    if parser.i != len(lines):
        bad = lines[parser.i]
        raise YamlError(bad.number, "unexpected indentation")
    return value


def _strip_comment(line: str) -> str:
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_key(text: str) -> tuple[str, str] | None:
    """(key, rest) of a ``key: value`` line, or None."""
    quote = ""
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and i == 0:
            quote = c
        elif c == ":" and (i + 1 == len(text) or text[i + 1] == " "):
            key = text[:i].strip()
            if key[:1] in "'\"" and len(key) >= 2:
                key = key[1:-1]
            return key, text[i + 1:].strip()
        elif c in "[{" and i == 0:
            return None
    return None


class _Parser:
    def __init__(self, lines: list[_Line], raw: list[str]) -> None:
        self.lines = lines
        self.raw = raw
        self.i = 0

    def node(self, i: int, indent: int) -> Any:
        self.i = i
        line = self.lines[i]
        if line.text == "-" or line.text.startswith("- "):
            return self.sequence(indent)
        if _split_key(line.text) is None:
            self.i += 1
            return scalar(line.text, line.number)
        return self.mapping(indent)

    def mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        lines = self.lines
        while self.i < len(lines) and lines[self.i].indent == indent:
            line = lines[self.i]
            split = _split_key(line.text)
            if split is None:
                raise YamlError(line.number, f"expected `key: value`, found `{line.text}`")
            key, rest = split
            if key in result:
                raise YamlError(line.number, f"`{key}` appears twice")
            nxt = lines[self.i + 1] if self.i + 1 < len(lines) else None
            if rest in ("|", ">", "|-", ">-", "|+", ">+"):
                result[key] = self.block_text(line, indent, rest)
            elif rest:
                result[key] = scalar(rest, line.number)
                self.i += 1
            elif nxt is not None and nxt.indent > indent:
                result[key] = self.node(self.i + 1, nxt.indent)
            elif nxt is not None and nxt.indent == indent and (
                    nxt.text == "-" or nxt.text.startswith("- ")):
                self.i += 1
                result[key] = self.sequence(indent)
            else:
                result[key] = None
                self.i += 1
        if self.i < len(lines) and lines[self.i].indent > indent:
            raise YamlError(lines[self.i].number, "unexpected indentation")
        return result

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        lines = self.lines
        while self.i < len(lines) and lines[self.i].indent == indent and (
                lines[self.i].text == "-" or lines[self.i].text.startswith("- ")):
            line = lines[self.i]
            rest = line.text[1:].strip()
            if not rest:
                nxt = lines[self.i + 1] if self.i + 1 < len(lines) else None
                if nxt is not None and nxt.indent > indent:
                    items.append(self.node(self.i + 1, nxt.indent))
                else:
                    items.append(None)
                    self.i += 1
            elif _split_key(rest) is not None and rest[:1] not in "'\"[{":
                # `- key: value` opens a mapping whose keys line up with `key`.
                inner = indent + len(line.text) - len(rest)
                lines[self.i] = _Line(inner, rest, line.number)
                items.append(self.mapping(inner))
            else:
                items.append(scalar(rest, line.number))
                self.i += 1
        return items

    def block_text(self, line: _Line, indent: int, style: str) -> str:
        self.i += 1
        end = len(self.raw)
        while self.i < len(self.lines) and self.lines[self.i].indent > indent:
            self.i += 1
        if self.i < len(self.lines):
            end = self.lines[self.i].number - 1
        body = [r for r in self.raw[line.number:end]]
        while body and not body[-1].strip():
            body.pop()
        width = min((len(r) - len(r.lstrip(" ")) for r in body if r.strip()), default=0)
        texts = [r[width:] for r in body]
        text = "\n".join(texts) if style[0] == "|" else " ".join(t.strip() for t in texts)
        return text if style.endswith("-") else text + "\n"


def scalar(text: str, number: int) -> Any:
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError(number, f"unterminated string {text}")
        try:
            return json.loads(text)
        except ValueError:
            return text[1:-1]
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(number, f"unterminated string {text}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlError(number, "a flow list must close on its line")
        return [scalar(p, number) for p in _split_flow(text[1:-1])]
    if text.startswith("{"):
        if not text.endswith("}"):
            raise YamlError(number, "a flow mapping must close on its line")
        out: dict[str, Any] = {}
        for part in _split_flow(text[1:-1]):
            split = _split_key(part)
            if split is None:
                raise YamlError(number, f"expected `key: value` in `{text}`")
            out[split[0]] = scalar(split[1], number) if split[1] else None
        return out
    if text.startswith(("&", "*", "!", "|", ">")):
        raise YamlError(number, f"`{text}` is not supported here")
    if text in ("~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _split_flow(body: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(body):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    last = body[start:].strip()
    if last:
        parts.append(last)
    return [p for p in parts if p]
