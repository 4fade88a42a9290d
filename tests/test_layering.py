"""The layout's rules, read from the code's own imports: every import runs down the layers of
docs/architecture.md, and other packages reach gossip, transit and the routing core only through
their public faces."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "gossip", "transit", "agent", "labs")

# Rooms from the bottom up; a room may import only rooms with a lower rank.
RANK = {
    "common": 0,
    "gossip": 1,
    "transit": 2,
    "agent.config": 3,
    "agent.cluster": 4,
    "agent.logs": 4,
    "agent.keyfile": 4,
    "agent.wirevalues": 4,
    "agent.published": 5,
    "agent.routing": 5,
    "agent.health": 6,
    "agent.kernel": 6,
    "agent.announce": 7,
    "agent.bgp": 8,
    "agent.http": 9,
    "agent.runner": 10,
    "agent.cli": 11,
    "agent.__main__": 12,
    "labs": 13,
}
FACES = {"gossip": "gossip/", "transit": "transit/", "agent.routing": "agent/routing/"}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "agent" else ".".join(parts[:2])


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> Iterator[tuple[Path, int, str]]:
    """Every absolute import of our own packages: (file, line, module imported)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in PACKAGES:
                        yield path, node.lineno, name


def test_every_room_has_a_rank() -> None:
    rooms = {room(module_of(path)) for path, _, _ in imports()}
    assert rooms - {"agent"} <= set(RANK), rooms - set(RANK)


def test_imports_only_run_down() -> None:
    upward = []
    for path, line, target in imports():
        src, dst = room(module_of(path)), room(target)
        if src != dst and not RANK[dst] < RANK[src]:
            upward.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {dst}")
    assert upward == []


def test_other_packages_use_the_public_faces() -> None:
    behind = []
    for path, line, target in imports():
        rel = path.relative_to(ROOT).as_posix()
        for face, home in FACES.items():
            if target.startswith(face + ".") and not rel.startswith(home):
                behind.append(f"{rel}:{line}: imports {target}, not {face}")
    assert behind == []


@pytest.mark.parametrize("face", sorted(FACES))
def test_each_exported_name_is_its_modules_object(face: str) -> None:
    package = importlib.import_module(face)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    home = getattr(package, "_HOME", None)
    if home is not None:
        assert sorted(home) == sorted(package.__all__)
        for name, module in home.items():
            assert getattr(package, name) is getattr(importlib.import_module(module), name), name
