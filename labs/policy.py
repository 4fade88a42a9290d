"""policy: export policies seen by BIRD, an import policy shaping one machine's RIB, ``wiremesh rib``.

Four machines: m1, m2 and m3 announce the VIP (no check: always announced), m4 announces nothing and
watches. BIRD exports three static prefixes to every agent, one of them tagged (65000,666). Policy sets
and machine settings are created through the API only. The phases, each timed from the API call until
BIRD's table (and m4's RIB) shows the effect:

0. no policy: BIRD breaks the tie on router id (m1); m4 has the three mesh paths as one ECMP set;
1. export policies: m1 prepends 64512 twice (community 64512:1), m2 sets MED 50 (64512:2), m3 MED 10
   (64512:3). BIRD shows the attributes and its best path follows them: m1 loses on AS path length,
   m2 on MED, m3 wins; m4's RIB makes the same choice for the same reasons;
2. an import policy on m4 only: it rejects what BIRD tagged 65000:666, sets LOCAL_PREF 200 on
   203.0.113.0/24, and LOCAL_PREF 150 on VIP paths tagged 64512:2 (m2's). m4 now routes the VIP via
   m2 while BIRD (and every other machine) still prefers m3: an import policy is this machine's alone.
   ``wiremesh rib`` (run in m4's namespace against its API) explains both choices; m3's is alongside;
3. m1's export policy is removed: its path has no MED again, which BIRD reads as 0 (RFC 4271), lower
   than m3's 10: BIRD goes back to m1. Setting a MED on some machines only is a trap; the lab shows it.

    python -m labs.policy [--no-missing-med]

Writes ``labs/results/policy.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.bird import bird_statics
from labs.kit.netns import require_root_and_tools
from labs.report import NONE_LABEL, Timeline
from labs.site import MESH_AS, VIP, Site, sampler

NAME = "policy"
WATCHER = "m4"  # announces nothing; the import policy is set on it
ANNOUNCERS = ("m1", "m2", "m3")
TAGGED, PREFERRED, PLAIN = "192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/24"
UPSTREAM = (PREFERRED, PLAIN, TAGGED)
DROP_TAG = "65000:666"
VIPS = {"prefix_list": [{"prefix": "100.96.0.0/16", "le": 32}]}

# BIRD sends its static routes, and only them, to every agent; TAGGED carries (65000,666).
BIRD_EXPORT = (
    "filter { if source != RTS_STATIC then reject; "
    f"if net = {TAGGED} then bgp_community.add((65000,666)); accept; }}"
)
BIRD_STATICS = bird_statics(UPSTREAM, name="upstream")


def export_set(name: str, tag: int, actions: dict[str, Any]) -> dict[str, Any]:
    """An export set that changes the VIPs' attributes and lets everything else out unchanged."""
    actions = {**actions, "communities": {"add": [f"{MESH_AS}:{tag}"]}}
    rule = {"name": "vips", "match": VIPS, "actions": actions, "result": "accept"}
    return {"name": name, "rules": [rule], "default": "accept"}


EXPORTS = {
    "m1": export_set("prepend-x2", 1, {"as_prepend": {"asn": MESH_AS, "count": 2}}),
    "m2": export_set("med-50", 2, {"set_med": 50}),
    "m3": export_set("med-10", 3, {"set_med": 10}),
}
IMPORT = {
    "name": "shape",
    "rules": [
        {"name": "drop-tagged", "match": {"communities": [DROP_TAG]}, "result": "reject"},
        {
            "name": "prefer-upstream",
            "match": {"prefix_list": [{"prefix": PREFERRED}]},
            "actions": {"set_local_pref": 200},
            "result": "accept",
        },
        {
            "name": "vip-via-m2",
            "match": {**VIPS, "communities": [f"{MESH_AS}:2"]},
            "actions": {"set_local_pref": 150},
            "result": "accept",
        },
    ],
    "default": "accept",
}


def bird_vip(site: Site) -> dict[str, dict[str, Any]]:
    """BIRD's paths for the VIP per protocol (machine): best, AS path, MED, communities."""
    assert site.bird is not None
    out: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in site.bird.birdc("show", "route", "all", f"{VIP}/32").splitlines():
        found = re.search(r"unicast \[(\S+)", line)
        if found:
            current = out[found.group(1)] = {
                "best": " * " in line,
                "as_path": "",
                "med": None,
                "communities": "",
            }
            continue
        attr = re.match(r"\s+BGP\.(as_path|med|community):\s*(.*)$", line)
        if current is not None and attr:
            key, value = attr.groups()
            if key == "med":
                current["med"] = int(value)
            else:
                current["communities" if key == "community" else key] = value.strip()
    return out


def bird_best(site: Site) -> str:
    return next((p for p, path in bird_vip(site).items() if path["best"]), NONE_LABEL)


def rib_of(site: Site, name: str, prefix: str) -> dict[str, Any] | None:
    """The destination ``prefix`` in machine ``name``'s RIB (``/v1/rib``), or None."""
    m = site.machines[name]
    assert m.agent is not None
    status, data = site.lab.request(m.agent, "GET", f"/v1/rib?prefix={prefix}")
    if status != 200 or not data.get("routes") or data["routes"][0]["prefix"] != prefix:
        return None
    route: dict[str, Any] = data["routes"][0]
    return route


def rib_choice(site: Site, name: str) -> str:
    """Machine ``name``'s choice for the VIP: the best path's machine, the ECMP set ``m1+m2+m3``, or
    ``local`` when it announces the VIP itself."""
    dest = rib_of(site, name, f"{VIP}/32")
    if dest is None:
        return NONE_LABEL
    if dest["best"]["peer"] == "local":
        return "local"  # the machine announces the VIP itself
    by_address = {m.address: m.name for m in site.machines.values()}
    hops = sorted(by_address.get(h, h) for h in dest["ecmp"])
    if len(hops) > 1:
        return "+".join(hops)
    return str(dest["best"].get("peer_name") or by_address.get(dest["best"]["next_hop"], "?"))


def local_prefs(site: Site, name: str) -> dict[str, int | None]:
    """LOCAL_PREF of the best path for each upstream prefix in ``name``'s RIB; absent: not there."""
    out: dict[str, int | None] = {}
    for prefix in UPSTREAM:
        dest = rib_of(site, name, prefix)
        if dest is not None:
            out[prefix] = dest["best"]["local_pref"]
    return out


def timed(
    tl: Timeline, since: float, checks: dict[str, Callable[[], bool]], timeout: float = 60.0
) -> dict[str, float | None]:
    """Seconds from ``since`` until each check holds (all polled together every 50 ms, so one slow
    check delays no other's figure), None for those still false after ``timeout``: the lab reports a
    policy that did not take effect rather than stopping."""
    took: dict[str, float | None] = dict.fromkeys(checks)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(v is None for v in took.values()):
        for what, check in checks.items():
            if took[what] is None and check():
                took[what] = round(time.time() - since, 3)
                tl.say(f"{what} ({took[what]:.2f} s after the API call)")
        time.sleep(0.05)
    for what, value in took.items():
        if value is None:
            tl.say(f"NOT SEEN within {timeout:g} s: {what}")
    return took


def bird_table(paths: dict[str, dict[str, Any]]) -> str:
    rows = [f"    {'':1} {'from':5} {'AS path':22} {'MED':4} communities"]
    for proto in sorted(paths):
        p = paths[proto]
        med = "-" if p["med"] is None else str(p["med"])
        rows.append(
            f"    {'*' if p['best'] else '':1} {proto:5} {p['as_path']:22} {med:4} {p['communities'] or '-'}"
        )
    return "\n".join(rows)


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def run(
    *,
    missing_med: bool = True,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    data: dict[str, Any] = {"scenario": NAME, "phases": {}}
    marks: list[tuple[float, str]] = []
    with Site(machines_count=4, bird_export=BIRD_EXPORT, bird_extra=BIRD_STATICS) as site:
        data["site"] = site.token  # names its links and namespaces: what a cleanup check looks for
        tl.say("site up: BIRD 2 exports 3 static prefixes to 4 machines, " + TAGGED + " tagged " + DROP_TAG)
        site.start_agents()
        site.wait_mesh()
        tl.say("4 agents see each other alive; BIRD has a session with each")
        site.call("POST", "/v1/vips", {"name": "web", "address": VIP, "machines": list(ANNOUNCERS)})
        t = time.time()
        up = timed(
            tl,
            t,
            {
                "BIRD has the VIP from m1, m2 and m3": lambda: len(bird_vip(site)) == 3,
                "m4 has the 3 upstream prefixes": lambda: len(local_prefs(site, WATCHER)) == 3,
                "m4 has the VIP's 3 mesh paths as one ECMP set": lambda: (
                    rib_choice(site, WATCHER).count("+") == 2
                ),
            },
        )
        data["setup_s"] = up

        def sample() -> dict[str, str]:
            return {
                "BIRD best": bird_best(site),
                "m4 RIB": rib_choice(site, WATCHER),
                "m3 RIB": rib_choice(site, "m3"),
            }

        with sampler(sample, every=0.2) as samples:
            time.sleep(1.0)
            phase0 = bird_vip(site)
            tl.say("phase 0, no policy: BIRD breaks the tie on router id\n" + bird_table(phase0))
            data["phases"]["0_no_policy"] = {"bird": phase0, "m4_choice": rib_choice(site, WATCHER)}

            # 1. Export policies, one set per announcing machine.
            t1 = time.time()
            marks.append((t1, "export policies"))
            for name, policy in EXPORTS.items():
                site.call("POST", "/v1/policy-sets", policy)
                site.call("PATCH", f"/v1/machines/{name}", {"export_policies": [policy["name"]]})
            tl.say(
                "phase 1: m1 exports with prepend x2, m2 with MED 50, m3 with MED 10 (each adds a community)",
                t1,
            )

            def attributes_seen() -> bool:
                paths = bird_vip(site)
                return (
                    paths.get("m1", {}).get("as_path") == " ".join([str(MESH_AS)] * 3)
                    and paths.get("m2", {}).get("med") == 50
                    and paths.get("m3", {}).get("med") == 10
                    and all(
                        f"({MESH_AS},{i})" in paths.get(f"m{i}", {}).get("communities", "") for i in (1, 2, 3)
                    )
                )

            seen, moved, m4_moved = timed(
                tl,
                t1,
                {
                    "BIRD shows the prepend, both MEDs and the three communities": attributes_seen,
                    "BIRD's best path is m3 (m1: longer AS path; m2: higher MED)": lambda: (
                        bird_best(site) == "m3"
                    ),
                    "m4's RIB prefers m3 for the same reasons": lambda: rib_choice(site, WATCHER) == "m3",
                },
            ).values()
            phase1 = bird_vip(site)
            tl.say("BIRD's paths to the VIP:\n" + bird_table(phase1))
            explain1 = site.cli(WATCHER, "rib", f"{VIP}/32")
            tl.say(f"`wiremesh rib {VIP}/32` on m4:\n" + indent(explain1))
            data["phases"]["1_export"] = {
                "bird": phase1,
                "bird_attributes_s": seen,
                "bird_best_m3_s": moved,
                "m4_best_m3_s": m4_moved,
                "m4_choice": rib_choice(site, WATCHER),
                "m4_rib_vip": explain1,
            }

            time.sleep(1.0)  # a second of each state on the plot

            # 2. An import policy on m4 only.
            t2 = time.time()
            marks.append((t2, "import policy on m4"))
            site.call("POST", "/v1/policy-sets", IMPORT)
            site.call("PATCH", f"/v1/machines/{WATCHER}", {"import_policies": [IMPORT["name"]]})
            tl.say(
                f"phase 2: import policy on m4: reject {DROP_TAG}, LOCAL_PREF 200 on {PREFERRED}, "
                f"150 on VIP paths tagged {MESH_AS}:2",
                t2,
            )

            def shaped_rib() -> bool:
                prefs = local_prefs(site, WATCHER)
                return TAGGED not in prefs and prefs.get(PREFERRED) == 200 and PLAIN in prefs

            shaped, via_m2 = timed(
                tl,
                t2,
                {
                    f"m4's RIB: {TAGGED} rejected, {PREFERRED} at LOCAL_PREF 200": shaped_rib,
                    "m4 routes the VIP via m2 (LOCAL_PREF 150 beats m3's MED)": lambda: (
                        rib_choice(site, WATCHER) == "m2"
                    ),
                },
            ).values()
            vip_dest = rib_of(site, WATCHER, f"{VIP}/32") or {}
            unchanged = {"bird": bird_best(site), "m3": rib_choice(site, "m3")}
            tl.say(f"elsewhere nothing moved: BIRD's best {unchanged['bird']}, m3's choice {unchanged['m3']}")
            rib_m4 = site.cli(WATCHER, "rib", "--all-paths")
            tl.say("`wiremesh rib --all-paths` on m4 (import policy 'shape'):\n" + indent(rib_m4))
            vip_m4 = site.cli(WATCHER, "rib", f"{VIP}/32")
            tl.say(f"`wiremesh rib {VIP}/32` on m4:\n" + indent(vip_m4))
            rib_m3 = site.cli("m3", "rib")
            tl.say("`wiremesh rib` on m3 (no import policy), for contrast:\n" + indent(rib_m3))
            data["phases"]["2_import_m4"] = {
                "m4_rib_shaped_s": shaped,
                "m4_best_m2_s": via_m2,
                "m4_local_prefs": local_prefs(site, WATCHER),
                "m3_local_prefs": local_prefs(site, "m3"),
                "m4_choice": rib_choice(site, WATCHER),
                "m4_kernel_vip": vip_dest.get("installed"),
                "unchanged_elsewhere": unchanged,
                "m4_rib": rib_m4,
                "m4_rib_vip": vip_m4,
                "m3_rib": rib_m3,
            }

            time.sleep(1.0)

            # 3. A MED on some machines only: the one without wins in BIRD (missing MED = 0).
            if missing_med:
                t3 = time.time()
                marks.append((t3, "m1 export cleared"))
                site.call("PATCH", "/v1/machines/m1", {"export_policies": []})
                tl.say("phase 3: m1's export policy removed: its path has no prepend and no MED", t3)
                (back,) = timed(
                    tl,
                    t3,
                    {
                        "BIRD's best path is m1 again (no MED counts as 0, below m3's 10)": lambda: (
                            bird_best(site) == "m1"
                        )
                    },
                ).values()
                phase3 = bird_vip(site)
                tl.say("BIRD's paths to the VIP:\n" + bird_table(phase3))
                data["phases"]["3_missing_med"] = {"bird": phase3, "bird_best_m1_s": back}
            time.sleep(1.0)
    lanes = report.lanes_of(samples)
    p1, p2 = data["phases"]["1_export"], data["phases"]["2_import_m4"]
    data["figures"] = {
        "export_to_bird_s": p1["bird_attributes_s"],
        "export_best_path_moved_s": p1["bird_best_m3_s"],
        "import_rib_shaped_s": p2["m4_rib_shaped_s"],
        "import_best_path_moved_s": p2["m4_best_m2_s"],
        "bird_follows_export_policy": p1["bird_best_m3_s"] is not None,
        "import_policy_local_only": p2["unchanged_elsewhere"] == {"bird": "m3", "m3": "local"},
    }
    f = data["figures"]
    tl.say(
        f"export policy -> BIRD: {report.fmt(f['export_to_bird_s'])}, best path moved "
        f"{report.fmt(f['export_best_path_moved_s'])}; import policy -> m4's RIB "
        f"{report.fmt(f['import_rib_shaped_s'])}, m4's best path moved "
        f"{report.fmt(f['import_best_path_moved_s'])}"
    )
    title = "policy: who BIRD, m4 and m3 route the VIP to"
    report.save(NAME, title, data, tl, lanes, marks, results, write_files=write)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.policy", description=__doc__.split("\n")[0])
    parser.add_argument("--no-missing-med", action="store_true", help="skip phase 3 (m1's export removed)")
    args = parser.parse_args(argv)
    why = require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(missing_med=not args.no_missing_med)
    return 0


if __name__ == "__main__":
    sys.exit(main())
