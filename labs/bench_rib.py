"""RIB figures: paths per second in (import policy + Adj-RIB-In + decision + diff) and out (withdraw),
and the process's memory with the table loaded.

Setup (printed with the figures): N IPv4 /26 prefixes from 10.0.0.0/8, announced by two external
peers with different attributes (peer A: AS path ``65001 X``, MED 10, two communities; peer B: AS path
``65002 X 64600``, origin incomplete, MED 20, a large community, except for a quarter of its sets
``65002 X`` with origin IGP, which tie with A's down to the router id and so form ECMP pairs; X is
one of 1,000 four-byte ASNs, so each peer sends 1,000 distinct attribute sets, as a feed shares them
between prefixes), one ``announce`` call per prefix, peer A's table first, then peer B's. Every route
goes through an import chain of one policy set with 20 rules: bogon and length filters, customer
prefix lists, community and AS-path regex rules, most of which do not match, so a route is tried
against 19 or 20 rules (A's routes match rule 19, B's rule 20; both set LOCAL_PREF 110 and add a
community). Decision options: ECMP up to 4 paths. The diff is drained every 1,000 updates, as the
speaker would after each batch. Then both peers withdraw everything, A first.

Prefixes and attribute objects are built before the clock starts (they are the speaker's decoding);
the cost of ``Prefix.parse`` from text is printed on its own line.

    python -m labs.bench_rib                 # 100,000 prefixes x 2 peers = 200,000 paths
    python -m labs.bench_rib --prefixes 20000
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath

from agent.cluster.objects import PolicySet
from agent.routing import (
    AsPath,
    Attributes,
    DecisionOptions,
    Origin,
    Peer,
    PeerKind,
    PolicyChain,
    Prefix,
    Rib,
    split_communities,
)

RESULTS = FsPath(__file__).parent / "results"
TARGET_PATHS_PER_S = 50_000
TARGET_RSS_MB = 300
DRAIN_EVERY = 1_000
DISTINCT_ATTRS = 1_000


@dataclass
class Figures:
    prefixes: int
    paths: int
    rules: int
    in_paths_per_s: float
    out_paths_per_s: float
    rss_before_mb: float
    rss_loaded_mb: float
    peak_rss_mb: float
    parse_prefixes_per_s: float
    destinations: int
    ecmp_destinations: int
    changes_in: int
    changes_out: int


def policy() -> PolicySet:
    """20 rules; see the module docstring."""

    def pl(*entries: tuple[str, int | None, int | None]) -> list[dict[str, object]]:
        return [{"prefix": p, "ge": ge, "le": le} for p, ge, le in entries]

    rules: list[dict[str, object]] = [
        {
            "name": "bogons",
            "match": {
                "prefix_list": pl(
                    ("0.0.0.0/8", None, 32),
                    ("127.0.0.0/8", None, 32),
                    ("224.0.0.0/4", None, 32),
                    ("240.0.0.0/4", None, 32),
                )
            },
            "result": "reject",
        },
        {"name": "default", "match": {"prefix_list": pl(("0.0.0.0/0", None, None))}, "result": "reject"},
        {"name": "too-long", "match": {"prefix_list": pl(("0.0.0.0/0", 29, 32))}, "result": "reject"},
        {"name": "blackhole", "match": {"communities": ["blackhole"]}, "result": "reject"},
        {"name": "no-private-as", "match": {"as_path": "_6449[6-9]_|_645[0-1][0-9]_"}, "result": "reject"},
    ]
    for i in range(8):  # customer blocks, none inside 10.0.0.0/8
        rules.append(
            {
                "name": f"customer-{i}",
                "match": {
                    "prefix_list": pl((f"172.{16 + i}.0.0/16", None, 24), (f"192.168.{i}.0/24", None, 28))
                },
                "actions": {"set_local_pref": 200, "communities": {"add": [f"65000:{100 + i}"]}},
            }
        )
    rules += [
        {
            "name": "graceful-shutdown",
            "match": {"communities": ["graceful-shutdown"]},
            "actions": {"set_local_pref": 0},
        },
        {"name": "depref-transit", "match": {"as_path": "_3356_|_174_"}, "actions": {"set_local_pref": 80}},
        {
            "name": "tag-large",
            "match": {"communities": ["65002:1:2"], "prefix_list": pl(("10.0.0.0/8", 25, 25))},
            "actions": {"set_med": 5},
        },
        {
            "name": "prepend-test",
            "match": {"communities": ["65001:9999"]},
            "actions": {"as_prepend": {"asn": 65000, "count": 2}},
        },
        {
            "name": "no-export-scrub",
            "match": {"communities": ["no-export"]},
            "actions": {"communities": {"remove": ["no-export"]}},
        },
        {
            "name": "from-a",
            "match": {"as_path": "^65001_", "prefix_list": pl(("10.0.0.0/8", 16, 28))},
            "actions": {"communities": {"add": ["65000:1"]}, "set_local_pref": 110},
        },
        {"name": "rest", "actions": {"set_local_pref": 110, "communities": {"add": ["65000:2"]}}},
    ]
    assert len(rules) == 20
    return PolicySet.model_validate({"name": "bench-import", "rules": rules, "default": "reject"})


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def attributes(peer: str) -> list[Attributes]:
    out = []
    for i in range(DISTINCT_ATTRS):
        transit = 131_072 + i  # 4-byte ASNs: not private, not this machine's
        if peer == "a":
            out.append(
                Attributes(
                    next_hop=ipaddress.IPv4Address("198.18.0.1"),
                    as_path=AsPath.of(65001, transit),
                    origin=Origin.IGP,
                    med=10,
                    communities=split_communities(["65001:100", f"65001:{i % 50}"])[0],
                )
            )
        else:
            out.append(
                Attributes(
                    next_hop=ipaddress.IPv4Address("198.18.0.2"),
                    # a quarter as long as A's and origin IGP: ECMP with A's path
                    as_path=AsPath.of(65002, transit) if i % 4 == 0 else AsPath.of(65002, transit, 64600),
                    origin=Origin.IGP if i % 4 == 0 else Origin.INCOMPLETE,
                    med=20,
                    large_communities=frozenset({(65002, 1, i % 10)}),
                )
            )
    return out


def run(n: int) -> Figures:
    texts = [str(ipaddress.IPv4Network(((10 << 24) + (i << 6), 26))) for i in range(n)]
    t0 = time.perf_counter()
    prefixes = [Prefix.parse(t) for t in texts]
    parse_rate = n / (time.perf_counter() - t0)
    del texts

    options = DecisionOptions(max_paths=4)
    a = Peer(
        ipaddress.IPv4Address("198.18.0.1"), 65001, ipaddress.IPv4Address("198.18.0.1"), PeerKind.EXTERNAL
    )
    b = Peer(
        ipaddress.IPv4Address("198.18.0.2"), 65002, ipaddress.IPv4Address("198.18.0.2"), PeerKind.EXTERNAL
    )
    attrs = {a: attributes("a"), b: attributes("b")}
    chain = PolicyChain.of([policy()])
    rib = Rib(
        router_id=ipaddress.IPv4Address("198.18.255.1"), asn=65000, options=options, import_policy=chain
    )
    rib.peer_up(a)
    rib.peer_up(b)
    gc.collect()
    rss_before = rss_mb()

    changes_in = 0
    t0 = time.perf_counter()
    now = 0.0
    for peer in (a, b):
        pool = attrs[peer]
        for i, prefix in enumerate(prefixes):
            rib.announce(peer, prefix, pool[i % DISTINCT_ATTRS], now)
            if i % DRAIN_EVERY == DRAIN_EVERY - 1:
                changes_in += len(rib.take_diff())
                now += 0.001
    changes_in += len(rib.take_diff())
    in_rate = 2 * n / (time.perf_counter() - t0)

    gc.collect()
    rss_loaded = rss_mb()
    destinations = len(rib)
    ecmp = sum(1 for _, s in rib.selections() if len(s.multipath) > 1)

    changes_out = 0
    t0 = time.perf_counter()
    for peer in (a, b):
        for i, prefix in enumerate(prefixes):
            rib.withdraw(peer, prefix)
            if i % DRAIN_EVERY == DRAIN_EVERY - 1:
                changes_out += len(rib.take_diff())
    changes_out += len(rib.take_diff())
    out_rate = 2 * n / (time.perf_counter() - t0)
    assert len(rib) == 0 and rib.path_count() == 0

    return Figures(
        prefixes=n,
        paths=2 * n,
        rules=len(chain.sets[0].rules),
        in_paths_per_s=round(in_rate),
        out_paths_per_s=round(out_rate),
        rss_before_mb=round(rss_before, 1),
        rss_loaded_mb=round(rss_loaded, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        parse_prefixes_per_s=round(parse_rate),
        destinations=destinations,
        ecmp_destinations=ecmp,
        changes_in=changes_in,
        changes_out=changes_out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, default=100_000)
    args = parser.parse_args(argv)

    print(
        f"setup: {args.prefixes:,} IPv4 /26 prefixes x 2 external peers = {2 * args.prefixes:,} paths, "
        f"{DISTINCT_ATTRS:,} attribute sets per peer, import chain of 1 set x 20 rules, ECMP max 4, "
        f"one announce/withdraw call per path, diff drained every {DRAIN_EVERY:,} updates",
        flush=True,
    )
    f = run(args.prefixes)
    ok_in = f.in_paths_per_s >= TARGET_PATHS_PER_S
    ok_out = f.out_paths_per_s >= TARGET_PATHS_PER_S
    ok_rss = f.rss_loaded_mb < TARGET_RSS_MB
    target = f"target >= {TARGET_PATHS_PER_S:,}"
    print(f"in:   {f.in_paths_per_s:>10,.0f} paths/s  ({target}: {'met' if ok_in else 'NOT met'})")
    print(f"out:  {f.out_paths_per_s:>10,.0f} paths/s  ({target}: {'met' if ok_out else 'NOT met'})")
    print(
        f"RSS:  {f.rss_loaded_mb:>10,.1f} MB with {f.paths:,} paths loaded "
        f"({f.rss_before_mb:.1f} MB before loading; peak {f.peak_rss_mb:.1f} MB; "
        f"target < {TARGET_RSS_MB} MB: {'met' if ok_rss else 'NOT met'})"
    )
    print(
        f"loc-rib: {f.destinations:,} destinations, {f.ecmp_destinations:,} with ECMP; "
        f"diff changes: {f.changes_in:,} in, {f.changes_out:,} out"
    )
    print(f"Prefix.parse (the speaker's decoding, not timed above): {f.parse_prefixes_per_s:,.0f} prefixes/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_rib.json"
    out.write_text(json.dumps(asdict(f), indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
