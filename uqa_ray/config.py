"""Frozen dataclass configs are the schema; YAML files and CLI strings are overrides only.

Every stage declares its config as a frozen dataclass with defaults. `build(Cls, overrides)` turns a
(nested) mapping into an instance: unknown keys and wrong types are errors that name the dotted key,
and each dataclass may validate itself in `__post_init__` (and derive defaults of its nested configs from
its own overrides, `derived_defaults`). `content_hash` keys stage outputs so that a rerun with the same
config reuses them.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, type or value is wrong; the message names the dotted key."""


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Coerce `value` to the annotation `tp` where unambiguous, else raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_type(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        return tuple(_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; accept numeric strings for floats.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    if hasattr(cls, "derived_defaults"):  # defaults a config derives from its own overrides (LabConfig's seed)
        data = merge(cls.derived_defaults(data), data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _check_type(_onto_default(fields[k], v), hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # from a config its __post_init__ builds (GridSpec's AlignConfig): say where
        if not prefix:
            raise
        raise ConfigError(f"{prefix.rstrip('.')}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from e


def _onto_default(field: dataclasses.Field, value: Any) -> Any:
    """Overrides of a nested config apply onto the field's own default, which may differ from its class's
    (pretraining's `scaling` defaults to 2 workers, alignment's to 0): `scaling: {use_gpu: true}` keeps
    the rest of the parent's default."""
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if dataclasses.is_dataclass(default) and not isinstance(default, type) and isinstance(value, Mapping):
        return merge(to_dict(default), value)
    return value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two override mappings (later wins)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_dotted(items: list[str]) -> dict[str, Any]:
    """`["model.d_model=256", "lr=1e-4"]` -> nested mapping; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return dict(data)


def build(cls: type[T], *overrides: Mapping[str, Any] | None) -> T:
    """Build `cls` from its defaults plus overrides applied in order (unknown keys are errors)."""
    data: dict[str, Any] = {}
    for o in overrides:
        if o:
            data = merge(data, o)
    return _build(cls, data)


def replace(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace` with the same validation as `build` (nested dicts allowed)."""
    return build(type(cfg), to_dict(cfg), changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def source_hash(*packages: str, length: int = 12) -> str:
    """Stable short hash of the Python sources of `packages` ("uqa_ray.encoders", ...), modules, or single
    definitions ("uqa_ray.align.data:QuestionSplit.messages": that function's or class's source; a constant's
    repr): part of the key of an output that depends on code as much as on config, so a code change never
    reuses what older code made (a finished pretraining run, say). Naming definitions rather than whole
    modules keys an output by the code that shapes it, not by every edit to the file around it. The code
    is hashed without its docstrings and comments (`code_text`): what it does, not what it says."""
    h = hashlib.sha256()
    for pkg in packages:
        name, _, qual = pkg.partition(":")
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"source_hash: no package {name!r}")
        if qual:
            obj: Any = importlib.import_module(name)
            for part in qual.split("."):
                if not hasattr(obj, part):
                    raise ValueError(f"source_hash: {name} has no {qual!r}")
                obj = getattr(obj, part)
            code = code_text(inspect.getsource(obj)) if callable(obj) else repr(obj)
            h.update(f"{pkg}\n{code}".encode())
            continue
        # a package: every source under its folder; a plain module: its one file
        root = Path(spec.origin).parent
        files = sorted(root.rglob("*.py")) if spec.submodule_search_locations is not None else [Path(spec.origin)]
        for f in files:
            h.update(f"{pkg}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(code_text(f.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:length]


def code_text(source: str) -> str:
    """`source` without docstrings, comments, blank lines and trailing blanks, so that a docstring or
    comment edit leaves `source_hash` as it was. Lines inside a multi-line string are kept verbatim (a
    blank line in a prompt template is code). Positions come from `ast` and `tokenize`, whose line and
    column numbers are the same on every Python version (an `ast.dump` is not). A docstring that shares a
    line with code is kept."""
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a method whose multi-line string undercuts its indentation: hashed as it stands
        return source
    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not body:
            continue
        doc, end = body[0], body[0].end_lineno or body[0].lineno
        if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)
                and getattr(node, "lineno", 0) < doc.lineno and not lines[doc.lineno - 1][:doc.col_offset].strip()
                and (len(body) == 1 or body[1].lineno > end)):
            drop.update(range(doc.lineno, end + 1))
    cut, verbatim = {}, set()
    for t in tokenize.generate_tokens(io.StringIO(source).readline):
        if t.type == tokenize.COMMENT:
            cut[t.start[0]] = t.start[1]
        elif t.end[0] > t.start[0]:
            verbatim.update(range(t.start[0] + 1, t.end[0]))  # its last line ends in code
    kept = []
    for i, line in enumerate(lines, 1):
        if i in drop:
            continue
        if i in verbatim:
            kept.append(line)
        elif line := line[:cut.get(i, len(line))].rstrip():
            kept.append(line)
    return "\n".join(kept)


def content_hash(*parts: Any, length: int = 12) -> str:
    """Stable short hash of configs (dataclasses or JSON-able values), used to key stage outputs."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
