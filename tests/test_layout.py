"""The package is the agent: the wheel ships no labs, and production code never imports them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCTION = ("agent", "gossip", "transit", "common")


def test_the_wheel_ships_only_the_production_packages() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(include) == sorted(f"{p}*" for p in PRODUCTION)


def test_production_code_never_imports_labs_or_tests() -> None:
    offenders = []
    for package in PRODUCTION:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(REPO)}: {name}"
                    for name in names
                    if name.split(".")[0] in ("labs", "tests")
                ]
    assert offenders == []
