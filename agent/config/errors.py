"""Config problems in one format, ``SOURCE: key.path: what is wrong``, whatever found them.

The models (:mod:`agent.config.model` and the section modules) are validated by pydantic; this module
is the one place that turns pydantic's error types into words for an operator, adds a ``did you mean``
for near misses, and names each key by its TOML path (``bgp.peers[1].peer_asn``).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, TypeAlias, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Loc: TypeAlias = tuple[str | int, ...]

# TOML's names for the types it has, so a message speaks the file's language, not Python's.
_TOML_TYPES: Mapping[type, str] = MappingProxyType(
    {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }
)
_EXPECTED: Mapping[str, str] = MappingProxyType(
    {
        "bool_type": "boolean",
        "int_type": "integer",
        "float_type": "number",
        "string_type": "string",
        "list_type": "array",
        "dict_type": "table",
        "model_type": "table",
        "model_attributes_type": "table",
    }
)
_COMPARISONS: Mapping[str, str] = MappingProxyType(
    {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: where it came from (a file or the command line), the key, and what."""

    source: str
    key: str | None
    problem: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}" if self.key else f"{self.source}: {self.problem}"


class ConfigError(ValueError):
    """A configuration that cannot be used. ``source``, ``key`` and ``problem`` are the first problem's;
    ``problems`` holds them all, and ``str()`` is one line per problem, as the CLI prints them."""

    def __init__(self, source: str, key: str | None, problem: str, *more: Problem) -> None:
        self.problems = (Problem(source, key, problem), *more)
        self.source, self.key, self.problem = source, key, problem
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> ConfigError:
        first, *rest = problems
        return cls(first.source, first.key, first.problem, *rest)


class Broken(ValueError):
    """Cross-field rules a table breaks, each as (key inside the table, problem): raised from a model
    validator, so pydantic gathers them with every other error and :func:`explain` names the key."""

    def __init__(self, found: Iterable[tuple[Loc, str]]) -> None:
        self.found = tuple(found)
        super().__init__("; ".join(problem for _, problem in self.found))


def key_path(loc: Loc) -> str:
    """``("bgp", "peers", 1, "address")`` as ``bgp.peers[1].address``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def explain(exc: ValidationError, root: type[BaseModel]) -> list[tuple[Loc, str]]:
    """Every error of ``exc`` (from validating ``root``) as (key, problem in plain words)."""
    out: list[tuple[Loc, str]] = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Broken):
            out += [((*loc, *where), problem) for where, problem in cause.found]
        else:
            out.append((loc, _describe(error, loc, root)))
    return out


def _describe(error: ErrorDetails, loc: Loc, root: type[BaseModel]) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return "unknown key" + (f" (did you mean {key_path((*loc[:-1], close[0]))!r}?)" if close else "")
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if kind == "list_type" and _model_at(root, (*loc, 0)) is not None:
            expected = "array of tables"
        got = _TOML_TYPES.get(type(value), type(value).__name__)
        return f"expected {expected}, got {got}" + ("" if isinstance(value, dict | list) else f" {value!r}")
    if kind == "literal_error":
        options = [str(o) for o in get_args(_unwrap(_annotation_at(root, loc)))] or [ctx["expected"]]
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(options)} (got {value!r}){hint}"
    if kind in _COMPARISONS:
        (limit,) = ctx.values()  # pydantic names it gt, ge, lt or le
        shown = float(value) if isinstance(limit, float) and type(value) is int else value
        return f"out of range: {shown} (must be {_COMPARISONS[kind]} {limit})"
    if kind == "finite_number":
        return f"must be a finite number (got {value})"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])  # a type no model here produces; pydantic's own words beat none


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _annotation_at(root: type[BaseModel], loc: Loc) -> Any:
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if get_origin(current) is list and args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    return current


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    found = _unwrap(_annotation_at(root, loc))
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None
