"""A package's public face, resolved lazily (PEP 562).

A package lists the names other packages may import and the module each lives in; the name is
imported from there on first use. So ``from gossip import MemberInfo`` costs what its own module
costs, and a face never creates an import cycle: modules inside the package import each other by
module path, never through the face. Type checkers see the package's ``TYPE_CHECKING`` imports
instead, so a misspelt name still fails there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_face(package: str, home: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public names live in ``home``'s modules."""

    def getattr_(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def dir_() -> list[str]:
        return sorted(home)

    return getattr_, dir_


__all__ = ["lazy_face"]
