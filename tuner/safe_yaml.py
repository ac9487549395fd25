"""YAML from files a user hands us (configs, spaces, stored spaces), parsed within bounds.

`yaml.safe_load` builds aliases by reference, so a 1 KB "billion laughs" document loads in
milliseconds and the first `repr`, deep copy or JSON dump of it expands 10^9 nodes (past
3 GB before it was stopped). Here the composed document is measured as it would expand
before anything is constructed, and refused past a bound; so are duplicate keys (YAML would
keep the last one silently), recursive aliases, nesting deeper than the parser can follow,
files that are not UTF-8 text, and files larger than any config. Every refusal is a
one-line `ConfigError` naming the source.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ConfigError

MAX_BYTES = 64 << 10  # the largest built-in space is under 3 KB; PyYAML parses ~35 KB/s at worst here
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion
MAX_CHARS = 10 << 20  # characters of all scalars after alias expansion
MAX_DEPTH = 50  # nested lists and mappings; the schema needs three
QUOTE_LIMIT = 200  # longest user text an error line quotes
_MERGE = "tag:yaml.org,2002:merge"


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for an error line, cut to `limit` characters with an ellipsis."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read(path: str | Path) -> Any:
    """The document in the file `path`; refuses non-files, big files, binary and non-UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        kind = ("a directory, not a YAML file" if path.is_dir() else
                "not a regular file" if path.exists() else "file not found")  # a device or a pipe would never end
        raise ConfigError(f"{path}: {kind}")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse(_text(data, str(path)), str(path))


def _check_size(size: int, source: str) -> None:
    if size > MAX_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_BYTES >> 10} KiB; a config or space is a few KB of YAML")


def _text(data: bytes, source: str) -> str:
    _check_size(len(data), source)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{source}: not a text file (NUL byte at offset {nul}); expected UTF-8 YAML")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          f"expected UTF-8 YAML") from None


def parse(text: str, source: str) -> Any:
    """The document in `text`, measured before it is constructed; `source` names it in errors."""
    _check_size(len(text), source)
    loader = None
    try:
        loader = _DepthBoundLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, source)
        return loader.construct_document(node)
    except _TooDeep as exc:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep at line {exc.line}; "
                          f"a config or space needs a few") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        if isinstance(exc, yaml.reader.ReaderError):
            where = f" at character {exc.position}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {_cut(problem)}") from None
    finally:
        if loader is not None:
            loader.dispose()


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _DepthBoundLoader(yaml.SafeLoader):
    """PyYAML composes nested nodes recursively: past ~300 levels that is a RecursionError
    after seconds of unwinding, so the depth is counted and refused early."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.1, which PyYAML follows, reads a float only with a dot and a signed exponent: `1e-3`,
# `5E+2` and `1.0e3` would stay strings, and a learning rate written the usual way would be
# refused as "expected float". YAML 1.2 (core schema) reads them as floats; so does this loader.
_DepthBoundLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_keys(node: yaml.MappingNode, source: str) -> None:
    first_line: dict[tuple, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in first_line:
            raise ConfigError(f"{source}: duplicate key {quote(key.value)} at line {line} "
                              f"(first at line {first_line[key.tag, key.value]}); each key may appear once")
        first_line[key.tag, key.value] = line


def _measure(root: yaml.Node, source: str) -> None:
    """Counts nodes and scalar characters as aliases would expand them (each shared node is
    measured once, so this is linear in the document); checks every mapping's keys."""
    size: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            for child in _children(node):
                nodes, chars = nodes + size[id(child)][0], chars + size[id(child)][1]
            if nodes > MAX_NODES or chars > MAX_CHARS:
                raise ConfigError(f"{source}: aliases expand line {node.start_mark.line + 1} to more than "
                                  f"{MAX_NODES:,} values or {MAX_CHARS >> 20} MiB of text; "
                                  f"a config or space is a few KB of YAML")
            size[key] = (nodes, chars)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(f"{source}: a recursive alias at line {node.start_mark.line + 1} "
                              f"(a value that contains itself)")
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, source)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
