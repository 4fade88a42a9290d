"""The gossip package's public face: what it exports, that it stays cheap, and that it cannot cycle."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import gossip

GOSSIP_DIR = Path(gossip.__file__).parent


def test_every_exported_name_is_the_object_its_module_defines() -> None:
    for name in gossip.__all__:
        home = importlib.import_module(gossip._HOME[name])
        assert getattr(gossip, name) is getattr(home, name), name


def test_the_export_table_and_all_agree() -> None:
    assert sorted(gossip._HOME) == sorted(gossip.__all__)
    assert len(set(gossip.__all__)) == len(gossip.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = gossip.no_such_thing  # type: ignore[attr-defined]


def test_the_old_module_paths_still_hold_their_names() -> None:
    from gossip.swim import StreamRequest, Swim, app_digest

    assert gossip.Swim is Swim
    assert gossip.StreamRequest is StreamRequest
    assert gossip.app_digest is app_digest


def test_importing_a_data_type_does_not_load_the_runtime() -> None:
    probe = "import sys; from gossip import MemberInfo; print(sorted({'trio', 'msgpack'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=GOSSIP_DIR.parent
    )
    assert out.stdout.strip() == "[]"


def test_no_gossip_module_imports_through_the_package_face() -> None:
    for path in sorted(GOSSIP_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "gossip" and node.level == 0, f"{path.name}: line {node.lineno}"
