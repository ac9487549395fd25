"""User code a config names: "package.module:function" or "path/to/file.py:function".

`model.towers` names the function that builds a user's own towers (`tuner.model.custom`).
A file path is relative to the config or space file that names it; `anchor` makes it absolute
when that file is read, so a study's stored space, `best.yaml` and every worker find the same
file wherever they were started. A module is imported from the installed packages or, as
`python -m` would, from the current directory. A study records the code's `fingerprint`
(the name, and the sha256 of the source file) and every worker compares its own before the
first trial (`verify`): workers that would train different towers under one study refuse.
Light on purpose: the user's module is imported by `load_function` alone.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from tuner.errors import ConfigError
from tuner.safe_yaml import quote

TOWERS_KEY = "model.towers"
FORMS = "'package.module:function' or 'path/to/file.py:function'"
FILE_MODULE_PREFIX = "_tuner_user_"  # the module name a user's file is imported under (plus a hash)


@dataclass(frozen=True)
class CodeRef:
    """A parsed spec: `module` is a dotted module name, or a file path ending in .py."""

    spec: str
    module: str
    function: str

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")


def parse(spec, key: str = TOWERS_KEY) -> CodeRef:
    """The spec's parts; a malformed one is a one-line ConfigError naming `key` (which may start
    with the file, "space.yaml: model.towers")."""
    if not isinstance(spec, str):
        raise ConfigError(f"{key}: expected {FORMS}, got {quote(spec)}")
    module, sep, function = spec.rpartition(":")
    dotted = module.endswith(".py") or all(part.isidentifier() for part in module.split("."))
    if not sep or not module or not function.isidentifier() or not dotted:
        raise ConfigError(f"{key}: {quote(spec)} is not {FORMS}")
    return CodeRef(spec, module, function)


def anchor(spec, config_file: str | Path) -> object:
    """`spec` with a relative file path made absolute against the directory `config_file` really
    lives in (symlinks followed: `search_spaces/` links to `tuner/spaces/`). Anything else is
    returned unchanged; validation reports malformed specs."""
    try:
        ref = parse(spec)
    except ConfigError:
        return spec
    if not ref.is_file or os.path.isabs(ref.module):
        return spec
    path = os.path.normpath(Path(config_file).resolve().parent / ref.module)
    return f"{path}:{ref.function}"


def anchor_config(data, config_file: str | Path):
    """A config or space mapping (as read from `config_file`) with `model.towers` anchored."""
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and "towers" in model:
        data = {**data, "model": {**model, "towers": anchor(model["towers"], config_file)}}
    return data


def anchor_file(data, text: str, config_file: str | Path) -> tuple[object, str]:
    """A space as read from `config_file`, its mapping and its text, with `model.towers` anchored
    in both; the text keeps its comments and layout. The copy a study stores must name the file
    wherever its workers start, and `tuner best` writes configs that do too."""
    data = anchor_config(data, config_file)
    towers = data.get("model", {}).get("towers") if isinstance(data, dict) else None
    if not isinstance(towers, str):
        return data, text
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # already read within bounds by safe_yaml
    node = _child(_child(root, "model"), "towers")
    if node is None or node.value == towers:
        return data, text
    start, end = node.start_mark.index, node.end_mark.index
    return data, text[:start] + json.dumps(towers) + text[end:]  # a JSON string is a YAML double-quoted scalar


def _child(node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def load_function(spec: str, key: str = TOWERS_KEY) -> Callable:
    """The function `spec` names. An import that fails, or a missing function, is a one-line
    ConfigError naming `key`, the module and what was expected."""
    ref = parse(spec, key)
    if ref.is_file:
        path = Path(ref.module)
        if not path.is_file():
            raise ConfigError(f"{key}: {spec}: file not found: {path} (a relative path is relative to "
                              "the config file; every worker needs the file at this path)")
        source = path.read_bytes()
        # One module per path and content, so a file edited between two runs in one process is read again.
        name = FILE_MODULE_PREFIX + hashlib.sha256(str(path.resolve()).encode() + source).hexdigest()[:16]
        module = sys.modules.get(name)  # the interpreter's registry of imported modules
        if module is None:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as exc:  # the user's code: its error becomes the reason, with its line
                del sys.modules[name]
                raise ConfigError(f"{key}: {spec}: importing {path} failed: {describe(exc, str(path))}") from exc
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # as `python -m` would: modules next to the config work too
        try:
            module = importlib.import_module(ref.module)
        except Exception as exc:  # noqa: BLE001 - the user's code: its error becomes the reason
            raise ConfigError(f"{key}: {spec}: cannot import {ref.module}: {describe(exc)} (install the "
                              "package on every worker, or give a file path)") from exc
    fn = getattr(module, ref.function, None)
    if not callable(fn):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"{key}: {spec}: {ref.module} has no function {ref.function!r} "
                          f"(expected def {ref.function}(context); it defines: {', '.join(defined) or 'nothing'})")
    return fn


def describe(exc: BaseException, user_file: str | None = None) -> str:
    """`Type: message (file:line)` of an exception raised by user code, on one line; the line is
    the deepest frame in `user_file` when given, else the deepest frame."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    if user_file is not None:
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(user_file)]
        frames = mine or frames
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())
    message = message if len(message) <= 300 else message[:299] + "…"
    return f"{type(exc).__name__}: {message}{where}"


def fingerprint(spec: str, key: str = TOWERS_KEY) -> dict:
    """What a study records of the code: the spec and the sha256 of its source file (a module's
    file is found without running it beyond its parent packages; None for a module without one)."""
    ref = parse(spec, key)
    if ref.is_file:
        path = Path(ref.module)
        if not path.is_file():
            raise ConfigError(f"{key}: {spec}: file not found: {path}")
        origin = path
    else:
        try:
            found = importlib.util.find_spec(ref.module)
        except Exception as exc:  # noqa: BLE001 - a parent package that fails to import
            raise ConfigError(f"{key}: {spec}: cannot import {ref.module}: {describe(exc)}") from exc
        origin = Path(found.origin) if found is not None and found.origin and found.has_location else None
        if found is None:
            raise ConfigError(f"{key}: {spec}: cannot import {ref.module}: no such module (install the package "
                              "on every worker, or give a file path)")
    digest = hashlib.sha256(origin.read_bytes()).hexdigest() if origin is not None and origin.is_file() else None
    return {"function": spec, "sha256": digest}


def verify(recorded: dict | None, where: str) -> None:
    """Refuses, in one line, to run a study whose recorded towers differ from this machine's code."""
    if not recorded:
        return
    spec = recorded["function"]
    here = fingerprint(spec, f"{where}: {TOWERS_KEY}")
    if here["sha256"] != recorded.get("sha256"):
        def short(digest):
            return digest[:12] if digest else "none"

        raise ConfigError(f"{where}: {TOWERS_KEY}: {spec} differs from the code the study was started with "
                          f"(sha256 {short(here['sha256'])} here, {short(recorded.get('sha256'))} in the study); "
                          "every worker must run the same towers: share the same file or install the same package")
