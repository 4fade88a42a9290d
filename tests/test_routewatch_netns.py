"""The labs' route watcher (``labs.kit.routewatch``) against a real kernel: two namespaces of a
``NetnsLab``, routes added, replaced and deleted with ``ip route ... proto 200``. A delete followed by
an add is a gap with both times; a replace (new next hops) is not; other protocols are ignored."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from labs.kit.netns import NetnsLab
from labs.kit.proc import sh
from labs.kit.routewatch import RouteWatch
from labs.kit.wait import eventually_blocking

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


def test_a_route_deleted_and_added_back_is_a_gap_and_a_replace_is_not() -> None:
    with tempfile.TemporaryDirectory() as tmp, NetnsLab(Path(tmp)) as lab:
        a = lab.add_node("a", ["198.18.0.11"])
        b = lab.add_node("b", ["198.18.0.12"])
        sh("ip", "-n", a, "route", "add", "100.96.1.1/32", "via", "198.18.0.21", "proto", "200")
        with RouteWatch({"a": a, "b": b}) as watch:
            assert watch.routes("a") == {"100.96.1.1/32": ["198.18.0.21"]}  # from the first dump
            assert watch.routes("b") == {}
            sh("ip", "-n", b, "route", "add", "100.96.1.2/32", "via", "198.18.0.22", "proto", "200")
            sh("ip", "-n", b, "route", "add", "100.96.1.3/32", "via", "198.18.0.23", "proto", "static")
            sh("ip", "-n", a, "route", "replace", "100.96.1.1/32", "proto", "200",
               "nexthop", "via", "198.18.0.21", "nexthop", "via", "198.18.0.22")  # fmt: skip
            eventually_blocking(
                lambda: watch.routes("a").get("100.96.1.1/32") == ["198.18.0.21", "198.18.0.22"],
                what="the replace to be seen",
                timeout=5,
            )
            eventually_blocking(
                lambda: watch.routes("b") == {"100.96.1.2/32": ["198.18.0.22"]},
                what="b's own-protocol route, and only it",
                timeout=5,
            )
            assert watch.gaps() == []
            sh("ip", "-n", a, "route", "del", "100.96.1.1/32", "proto", "200")
            eventually_blocking(lambda: watch.gaps() != [], what="the delete to open a gap", timeout=5)
            (gap,) = watch.gaps()
            assert (gap.node, gap.prefix, gap.back) == ("a", "100.96.1.1/32", None)
            sh("ip", "-n", a, "route", "add", "100.96.1.1/32", "via", "198.18.0.22", "proto", "200")
            eventually_blocking(
                lambda: watch.gaps()[0].back is not None, what="the add to close the gap", timeout=5
            )
            (gap,) = watch.gaps()
            assert gap.back is not None and gap.back >= gap.gone
            assert watch.gaps(since=gap.gone + 1) == []
            assert watch.routes("a") == {"100.96.1.1/32": ["198.18.0.22"]}
            assert watch.overflows == 0
