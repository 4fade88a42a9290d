"""The site topology of the labs: machines running the real agent behind one BIRD 2 router, on mininet.

::

    client 198.18.1.10 ── router 198.18.1.1 | 198.18.0.1 ── LinuxBridge ── m1 198.18.0.11
                          (BIRD 2, AS 65000)                             ├─ m2 198.18.0.12
                                                                         └─ m3 198.18.0.13 ...

Every machine ``mN`` runs the real agent (gossip, ExaBGP; WireGuard when asked) and a tiny HTTP service
on port 8080 that answers with its name and can be made unhealthy (503) or stopped. BIRD peers with
every agent as an external peer (AS 64512) and installs its best path into the router's kernel, so the
client's requests to the VIP go wherever BIRD's table says. Optional baselines on the same machines and
segment: an ExaBGP speaker per machine running ExaBGP's own healthcheck (on a second LAN address, AS
64513, VIP :data:`EXA_VIP`) and keepalived (VRRP, VIP :data:`VRRP_VIP` on the LAN), both checking the
same service with the same interval, rise and fall.

The NAT variant puts machines in pairs of "sites" that cannot reach each other directly: in each NATed
machine's own namespace, iptables drops the UDP to the other side and MASQUERADEs what goes out.

Mininet hosts are unnamed namespaces; :meth:`labs.kit.netns.NetnsLab.adopt` names them, so the kit's
helpers (``ip netns exec``, API requests through ``setns``) work unchanged. Mininet is built without
``Mininet.init`` (which raises the machine's global sysctls and limits): the lab needs none of it.
Everything is removed on exit, also on failure and Ctrl-C: processes by pid, then mininet (its bridge
and veths), then the namespaces, then wireguard-go sockets and the work directory. Names carry a random
token, so two sites can run side by side. Addresses are 198.18.0.0/15 and 100.96.0.0/16 only, inside
namespaces made here; no namespace has a default route.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import tomli_w

from labs.kit.bird import Bird
from labs.kit.netns import Agent, NetnsLab
from labs.kit.proc import Proc, sh
from labs.kit.wait import eventually_blocking

ROUTER, CLIENT_GW, CLIENT = "198.18.0.1", "198.18.1.1", "198.18.1.10"
CLIENT_NET, VIP_NET = "198.18.1.0/24", "100.96.0.0/16"
ROUTER_AS, MESH_AS, BASELINE_AS = 65000, 64512, 64513
VIP, EXA_VIP, VRRP_VIP = "100.96.0.10", "100.96.0.20", "198.18.0.200"
SERVICE_PORT = 8080
RUN_DIR = Path("/var/run/wireguard")


def machine_address(i: int) -> str:
    return f"198.18.0.{10 + i}"


def baseline_address(i: int) -> str:
    """The second LAN address of machine ``i``, for its baseline ExaBGP (one BGP session per address)."""
    return f"198.18.0.{110 + i}"


def mesh_address(i: int) -> str:
    return f"100.64.0.{i}"


# The machine's service: answers GET with its name (200), or 503 while the state file says "fail".
SERVICE = r"""
import http.server, pathlib, sys
name, port, state = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = not state.exists() or state.read_text().strip() != "fail"
        body = (name + "\n").encode()
        self.send_response(200 if ok else 503)
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"""

# The client: one GET per interval to each URL, for a bounded duration; one JSON line per answer.
CLIENT_LOOP = r"""
import json, sys, time, urllib.request, urllib.error, threading
interval, duration, urls = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
end = time.time() + duration
def probe(url):
    due = time.time()
    while due < end:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=min(0.5, interval * 4)) as r:
                who, ok = r.read().decode().strip(), True
        except urllib.error.HTTPError as e:
            who, ok = e.read().decode().strip() or str(e.code), False
        except Exception as e:
            who, ok = type(e).__name__, False
        print(json.dumps({"url": url, "t": t, "ok": ok, "who": who}), flush=True)
        due += interval
        time.sleep(max(0.0, due - time.time()))
threads = [threading.Thread(target=probe, args=(u,)) for u in urls]
for th in threads:
    th.start()
for th in threads:
    th.join()
"""

FAST_GOSSIP = {"probe_interval": 0.5, "probe_timeout": 0.25, "gossip_interval": 0.1, "suspicion_mult": 3}


@dataclass(frozen=True)
class Check:
    """The health check every contender runs against the machine's service (ours, ExaBGP's, VRRP's)."""

    interval: float = 1.0
    timeout: float = 0.5
    rise: int = 2
    fall: int = 2

    def curl(self) -> str:
        return f"/usr/bin/curl -sf -m {self.timeout:g} -o /dev/null http://127.0.0.1:{SERVICE_PORT}/"

    def api(self) -> dict[str, Any]:
        return {
            "type": "http",
            "target": f"http://127.0.0.1:{SERVICE_PORT}/",
            "interval": self.interval,
            "timeout": self.timeout,
            "healthy_threshold": self.rise,
            "unhealthy_threshold": self.fall,
        }


@dataclass
class Machine:
    name: str
    index: int
    ns: str
    ifname: str
    agent: Agent | None = None
    service: Proc | None = None
    exabgp: Proc | None = None
    keepalived: Proc | None = None
    wg_ifname: str = ""

    @property
    def address(self) -> str:
        return machine_address(self.index)

    @property
    def mesh(self) -> str:
        return mesh_address(self.index)


@dataclass
class Site:
    """The topology in the module docstring. A context manager: :meth:`close` runs whatever happens."""

    machines_count: int = 3
    hold_time: int = 9
    check: Check = field(default_factory=Check)
    gossip: dict[str, Any] = field(default_factory=dict)
    wireguard: bool = False
    exabgp_baseline: bool = False
    bird_log: bool = False
    bird_export: str = "none"  # the template's export clause: what BIRD sends the agents (policy lab)
    bird_extra: str = ""  # appended to BIRD's config (e.g. a static protocol whose routes it exports)
    workdir: Path | None = None
    keep: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(3)[:5])
    machines: dict[str, Machine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._own_workdir = self.workdir is None
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="wiremesh-site-"))
        self.lab = NetnsLab(self.workdir, token=self.token, bridge=False)
        self.net: Any = None
        self.bird: Bird | None = None
        self.client_procs: list[Proc] = []
        self._nat: list[tuple[str, list[str]]] = []  # (namespace, iptables rule) to delete at close
        self._closed = False

    # --- building -------------------------------------------------------------------------------

    def __enter__(self) -> Site:
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt  # cleanup runs in __exit__ as on Ctrl-C

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        self._previous_term = previous
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def build(self) -> None:
        from mininet.log import setLogLevel  # type: ignore[import-untyped]
        from mininet.net import Mininet  # type: ignore[import-untyped]
        from mininet.nodelib import LinuxBridge  # type: ignore[import-untyped]

        setLogLevel("error")  # not the bridge-nf warnings: iptables here passes bridged traffic
        # Mininet.init raises the machine's global sysctls and rlimits; our namespaces need none of it.
        Mininet.inited = True
        t = self.token
        net = Mininet(switch=LinuxBridge, controller=None, build=False, autoSetMacs=False)
        self.net = net
        # A Linux bridge has no datapath id, but mininet derives one from the digits in the name and
        # fails when the random token has none: give it one.
        switch = net.addSwitch(f"s{t}", dpid="1")
        router = net.addHost(f"r{t}", ip=f"{ROUTER}/24")
        client = net.addHost(f"c{t}", ip=f"{CLIENT}/24")
        hosts = {}
        for i in range(1, self.machines_count + 1):
            name = f"m{i}"
            hosts[name] = net.addHost(f"{name}{t}", ip=f"{machine_address(i)}/24")
            self.machines[name] = Machine(name, i, "", f"{name}{t}-eth0", wg_ifname=f"wm{t}{i}"[:15])
        net.addLink(router, switch)
        for host in hosts.values():
            net.addLink(host, switch)
        net.addLink(client, router, params2={"ip": f"{CLIENT_GW}/24"})
        net.build()
        net.start()
        self.router_ns = self.lab.adopt("router", router.pid)
        self.client_ns = self.lab.adopt("client", client.pid)
        for name, host in hosts.items():
            self.machines[name].ns = self.lab.adopt(name, host.pid)
        self.router_if = f"r{t}-eth0"
        for ns in (self.router_ns, self.client_ns, *(m.ns for m in self.machines.values())):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", self.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", self.client_ns, "route", "add", VIP_NET, "via", CLIENT_GW)
        sh("ip", "-n", self.client_ns, "route", "add", f"{VRRP_VIP}/32", "via", CLIENT_GW)
        for m in self.machines.values():
            sh("ip", "-n", m.ns, "route", "add", CLIENT_NET, "via", ROUTER)
            if self.exabgp_baseline:
                sh("ip", "-n", m.ns, "addr", "add", f"{baseline_address(m.index)}/24", "dev", m.ifname)
                sh("ip", "-n", m.ns, "addr", "add", f"{EXA_VIP}/32", "dev", "lo", "label", "lo:exa")
        self.bird = self.lab.start_bird("router", self.bird_conf())
        for m in self.machines.values():
            self.start_service(m.name)

    def bird_conf(self) -> str:
        log = (
            f'log "{self.workdir}/bird-events.log" all;' if self.bird_log else "log stderr { error, fatal };"
        )
        protocols = [
            f"protocol bgp {m.name} from machine {{ neighbor {m.address} as {MESH_AS}; }}"
            for m in self.machines.values()
        ]
        if self.exabgp_baseline:
            protocols += [
                f"protocol bgp x{m.index} from machine "
                f"{{ neighbor {baseline_address(m.index)} as {BASELINE_AS}; }}"
                for m in self.machines.values()
            ]
        return f"""
router id {ROUTER};
{log}
timeformat route iso long ms;
timeformat protocol iso long ms;
protocol device {{ scan time 5; }}
protocol kernel {{
  ipv4 {{ export filter {{ if net ~ [ {VIP_NET}+ ] then accept; reject; }}; }};
}}
template bgp machine {{
  local {ROUTER} as {ROUTER_AS};
  hold time {self.hold_time};
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 2;
  ipv4 {{ import all; export {self.bird_export}; }};
}}
{self.bird_extra}
{chr(10).join(protocols)}
"""

    # --- agents ---------------------------------------------------------------------------------

    def agent_config(self, m: Machine, extra: str = "") -> str:
        """The machine's config after the kit's basics: join m1, BGP with the router, maybe WireGuard."""
        seeds = [f"{o.address}:7946" for o in self.machines.values() if o is not m][:3]
        top = {
            "join": seeds,
            "join_attempts": 60,
            "join_retry_interval": 0.5,
            "cluster": f"site-{self.token}",
        }
        peer = {
            "address": ROUTER,
            "peer_asn": ROUTER_AS,
            "local_address": m.address,
            "hold_time": self.hold_time,
        }
        tables: dict[str, Any] = {}
        if self.gossip:
            tables["gossip"] = self.gossip
        if self.wireguard:
            tables["wireguard"] = {"enabled": True, "interface": m.wg_ifname, "mesh_address": m.mesh}
        # The router as an array-of-tables entry (not tomli_w's inline array), so ``extra`` may add peers.
        text = tomli_w.dumps({**top, "bgp": {"enabled": True, "asn": MESH_AS, "drain_time": 1.0}})
        text += "\n[[bgp.peers]]\n" + tomli_w.dumps(peer)
        return text + ("\n" + tomli_w.dumps(tables) if tables else "") + extra

    def start_agents(self, names: Sequence[str] | None = None, extra: str = "") -> None:
        for name in names or list(self.machines):
            m = self.machines[name]
            m.agent = self.lab.start_agent(self.lab.agent(name, name, m.address, self.agent_config(m, extra)))

    def any_agent(self) -> Agent:
        for m in self.machines.values():
            if m.agent is not None and m.agent.proc is not None and m.agent.proc.running:
                return m.agent
        raise RuntimeError("no agent is running")

    def call(self, method: str, path: str, body: Any = None, machine: str | None = None) -> Any:
        agent = self.machines[machine].agent if machine else self.any_agent()
        assert agent is not None
        return self.lab.call(agent, method, path, body)

    def sessions_up(self, prefix: str = "m") -> bool:
        """Every machine's session with BIRD (``m*``, or the baselines' ``x*``) is Established."""
        assert self.bird is not None
        states = self.protocol_states()
        wanted = [f"{prefix}{m.index}" if prefix == "x" else m.name for m in self.machines.values()]
        return all(states.get(p) == "Established" for p in wanted)

    def protocol_states(self) -> dict[str, str]:
        assert self.bird is not None
        out = {}
        for line in self.bird.birdc("show", "protocols").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP":
                out[parts[0]] = parts[-1]
        return out

    def wait_mesh(self, timeout: float = 60.0) -> None:
        """Until every agent sees every other alive and BIRD has every session up."""
        want = set(self.machines)

        def members_ok() -> bool:
            for m in self.machines.values():
                assert m.agent is not None
                status, members = self.lab.request(m.agent, "GET", "/v1/members")
                if status != 200 or {x["name"] for x in members if x["state"] == "alive"} != want:
                    return False
            return True

        eventually_blocking(
            members_ok, what="every agent to see every other alive", timeout=timeout, poll=0.3
        )
        eventually_blocking(
            self.sessions_up, what="BIRD's sessions with every agent", timeout=timeout, poll=0.3
        )

    def cli(self, name: str, *args: str) -> str:
        """``wiremesh ARGS`` run inside machine ``name``'s namespace against its own API, as an operator
        logged in there would; its output (stdout, then stderr)."""
        m = self.machines[name]
        assert m.agent is not None
        argv = [sys.executable, "-m", "agent", *args]
        argv += ["--api", f"http://127.0.0.1:{m.agent.http_port}"]
        argv += ["--token-file", str(m.agent.state_dir / "api-token")]
        done = subprocess.run(
            ["ip", "netns", "exec", m.ns, *argv], capture_output=True, text=True, timeout=60, check=False
        )
        return done.stdout + done.stderr

    # --- services and baselines -----------------------------------------------------------------

    def state_file(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{name}.service-state"

    def start_service(self, name: str) -> None:
        m = self.machines[name]
        self.state_file(name).write_text("ok")
        m.service = self.lab.spawn(
            f"{name}-service",
            m.ns,
            [sys.executable, "-c", SERVICE, name, str(SERVICE_PORT), str(self.state_file(name))],
        )
        eventually_blocking(
            lambda: f":{SERVICE_PORT} " in sh("ip", "netns", "exec", m.ns, "ss", "-Htln"),
            what=f"{name}'s service to listen",
            timeout=15,
            poll=0.05,
        )

    def fail_service(self, name: str, failing: bool = True) -> float:
        """The service answers 503 (or 200 again); returns the wall time."""
        self.state_file(name).write_text("fail" if failing else "ok")
        return time.time()

    def stop_service(self, name: str) -> float:
        """SIGKILL the service (its port refuses from then on); returns the wall time."""
        m = self.machines[name]
        assert m.service is not None
        at = time.time()
        self.lab.signal(m.service, signal.SIGKILL)
        m.service.process.wait(timeout=10)
        return at

    def start_exabgp_baselines(self) -> None:
        """On each machine, ExaBGP with its own healthcheck announcing :data:`EXA_VIP` to BIRD."""
        assert self.workdir is not None
        exabgp = str(Path(sys.executable).parent / "exabgp")
        c = self.check
        for m in self.machines.values():
            hc = (
                f"{sys.executable} -m exabgp healthcheck --no-syslog --name {m.name} "
                f'--cmd "{c.curl()}" --ip {EXA_VIP}/32 --no-ip-setup --withdraw-on-down '
                f"--interval {c.interval:g} --fast-interval {c.interval:g} "
                f"--timeout {max(1, round(c.timeout))} "
                f"--rise {c.rise} --fall {c.fall}"
            )
            conf = self.workdir / f"{m.name}-exabgp.conf"
            conf.write_text(
                f"process hc {{\n    run {hc};\n    encoder text;\n}}\n"
                f"neighbor {ROUTER} {{\n    router-id {baseline_address(m.index)};\n"
                f"    local-address {baseline_address(m.index)};\n    local-as {BASELINE_AS};\n"
                f"    peer-as {ROUTER_AS};\n    hold-time {self.hold_time};\n"
                f"    family {{\n        ipv4 unicast;\n    }}\n"
                f"    api {{\n        processes [ hc ];\n    }}\n}}\n"
            )
            env = {
                "exabgp_daemon_user": "root",
                "exabgp_daemon_daemonize": "false",
                "exabgp_daemon_pid": "",
                "exabgp_api_cli": "false",
                "exabgp_tcp_bind": "",
                "exabgp_log_destination": "stdout",
            }
            m.exabgp = self.lab.spawn(f"{m.name}-exabgp", m.ns, [exabgp, "server", str(conf)], env=env)

    def start_keepalived(self) -> None:
        """keepalived (VRRP) on every machine's LAN interface, tracking the same check; m1 preferred."""
        assert self.workdir is not None
        c = self.check
        for m in self.machines.values():
            conf = self.workdir / f"{m.name}-keepalived.conf"
            conf.write_text(f"""
global_defs {{
  router_id {m.name}
  enable_script_security
  script_user root
}}
vrrp_script chk {{
  script "{c.curl()}"
  interval {max(1, round(c.interval))}
  timeout {max(1, round(c.timeout))}
  rise {c.rise}
  fall {c.fall}
}}
vrrp_instance web {{
  state BACKUP
  interface {m.ifname}
  virtual_router_id {int(self.token, 16) % 250 + 1}
  priority {200 - 10 * m.index}
  advert_int 1
  virtual_ipaddress {{
    {VRRP_VIP}/24 dev {m.ifname}
  }}
  track_script {{
    chk
  }}
}}
""")
            pids = [self.workdir / f"{m.name}-keepalived{k}.pid" for k in ("", "-vrrp", "-check")]
            m.keepalived = self.lab.spawn(
                f"{m.name}-keepalived",
                m.ns,
                [
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--vrrp",
                    "-f",
                    str(conf),
                    "-p",
                    str(pids[0]),
                    "-r",
                    str(pids[1]),
                    "-c",
                    str(pids[2]),
                ],
            )

    def vrrp_master(self) -> str | None:
        for m in self.machines.values():
            if VRRP_VIP in sh("ip", "-n", m.ns, "-4", "addr", "show", "dev", m.ifname, check=False):
                return m.name
        return None

    # --- observing ------------------------------------------------------------------------------

    def bird_paths(self, prefix: str) -> tuple[str | None, list[str]]:
        """(the protocol of BIRD's best path, every protocol with a path) for ``prefix``."""
        assert self.bird is not None
        best, every = None, []
        for line in self.bird.birdc("show", "route", prefix).splitlines():
            found = re.search(r"unicast \[(\S+)", line)
            if found:
                every.append(found.group(1))
                if " * " in line:
                    best = found.group(1)
        return best, every

    def start_client(self, urls: Sequence[str], duration: float, interval: float = 0.1) -> Proc:
        """The client's request loop (bounded by ``duration``); its JSON lines are in the proc's log."""
        proc = self.lab.spawn(
            f"client-{len(self.client_procs)}",
            self.client_ns,
            [sys.executable, "-c", CLIENT_LOOP, str(interval), str(duration), *urls],
        )
        self.client_procs.append(proc)
        return proc

    @staticmethod
    def client_answers(proc: Proc) -> list[dict[str, Any]]:
        out = []
        for line in proc.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and "t" in item:
                    out.append(item)
        return out

    # --- NAT and crashes ------------------------------------------------------------------------

    def nat(self, a: str, b: str) -> None:
        """a and b cannot reach each other directly (UDP dropped both ways, in each one's namespace);
        what a and b send elsewhere is MASQUERADEd, as behind a NAT gateway."""
        for x, y in ((a, b), (b, a)):
            mx, my = self.machines[x], self.machines[y]
            rules = [
                ["-A", "OUTPUT", "-p", "udp", "-d", my.address, "-j", "DROP"],
                ["-A", "INPUT", "-p", "udp", "-s", my.address, "-j", "DROP"],
                ["-t", "nat", "-A", "POSTROUTING", "-o", mx.ifname, "-j", "MASQUERADE"],
            ]
            for rule in rules:
                sh("ip", "netns", "exec", mx.ns, "iptables", "-w", "5", *rule)
                self._nat.append((mx.ns, rule))

    def lift_nat(self) -> float:
        for ns, rule in reversed(self._nat):
            delete = ["-D" if part == "-A" else part for part in rule]
            sh("ip", "netns", "exec", ns, "iptables", "-w", "5", *delete, check=False)
        self._nat.clear()
        return time.time()

    def crash(self, name: str) -> float:
        """The machine dies: its link goes down (no FIN, no RST: BIRD must wait for its hold timer) and
        every process in it gets SIGKILL. Returns the wall time."""
        m = self.machines[name]
        at = time.time()
        sh("ip", "-n", m.ns, "link", "set", m.ifname, "down")
        for pid in sh("ip", "netns", "pids", m.ns, check=False).split():
            if self.net is not None and int(pid) == self.net.get(f"{name}{self.token}").pid:
                continue  # mininet's shell for the host: mininet stops it
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        return at

    # --- cleanup --------------------------------------------------------------------------------

    def close(self) -> None:
        """Processes by pid, mininet (bridge, veths, host shells), namespaces, sockets, files."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.lift_nat()
        for proc in reversed(self.lab.procs):
            if proc.running:
                with contextlib.suppress(Exception):
                    self.lab.stop(proc, timeout=10)
        if self.net is not None:
            with (
                contextlib.suppress(Exception),
                open(os.devnull, "w") as null,
                contextlib.redirect_stdout(null),
            ):
                self.net.stop()
        self.lab.close()
        for m in self.machines.values():
            with contextlib.suppress(OSError):
                (RUN_DIR / f"{m.wg_ifname}.sock").unlink()
        if self._own_workdir and not self.keep and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if threading.current_thread() is threading.main_thread() and hasattr(self, "_previous_term"):
            signal.signal(signal.SIGTERM, self._previous_term)


@contextlib.contextmanager
def sampler(fn: Callable[[], Any], every: float = 0.1) -> Iterator[list[tuple[float, Any]]]:
    """Call ``fn`` every ``every`` seconds in a thread while the block runs; (wall time, value) pairs."""
    samples: list[tuple[float, Any]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            t = time.time()
            try:
                samples.append((t, fn()))
            except Exception as exc:
                samples.append((t, exc))
            stop.wait(max(0.0, every - (time.time() - t)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)
