"""`ctkit explain` agrees with the kernel: every packet of the matrix, sent for real and traced.

For each case of the packet matrix (integration/matrix.py) the example is applied with the nft backend
on its side of a namespace pair; a table that is not ctkit's (`inet trace`) sets `meta nftrace set 1` at
priority -400 of prerouting and output, and `nft monitor trace` runs in that namespace while the probes
run. Every traced packet of a probe's flow becomes an explain packet (addresses, ports, interface,
length, and the conntrack state the flow is in: new until the first reply, established after it and
for replies); the rules of ctkit's table the kernel reports for it (by the rule comment ctkit writes)
and their verdicts must be exactly the ones explain printed. A rule explain cannot judge from the
description (payload bytes) ends the comparison of that packet only if the kernel reports it as matched.
Not compared: packets the kernel made for a reject, ICMP errors, neighbour discovery, an FTP data
connection (its port is chosen at run time), the markers.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lab import (
    CLIENT4,
    CLIENT6,
    CLIENT_LAN4,
    SERVER4,
    SERVER6,
    SERVER_LAN4,
    backend_named,
    ftp_passive,
    icmp_echo,
    run,
    sock,
    stop,
    tcp_listen,
    tcp_probe,
    udp_exchange,
    udp_server,
)
from matrix import CASES, NETS, Case, Probe

from ctkit import accept_mark, names, pipeline
from ctkit.explain import explain, parse_packet

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.5
def trace_table(priority: int, match: str = "") -> str:
    return ("table inet trace {\n"
            f"  chain pre {{ type filter hook prerouting priority {priority}; {match} meta nftrace set 1; }}\n"
            f"  chain out {{ type filter hook output priority {priority}; {match} meta nftrace set 1; }}\n}}\n")


TRACE_TABLE = trace_table(-400)
#: iptables: after the raw table (xtables-monitor 1.8.9 stops at the first CT target it cannot print)
IPTABLES_TRACE_PRIORITY = -250
#: the IR chains ctkit's iptables backend places in the raw table (ctkit/backends/iptables/layout.py)
RAW_CHAINS = ("notrack-", "zone-", "timeout-", "helper-")
MARKER_PORT = 9  # discard: the datagrams to 127.0.0.1 that tell where the monitor's output is


class Monitor:
    """`nft monitor trace` in a namespace; its lines collected by a thread, every wait bounded."""

    def __init__(self, ns: str):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor", "trace"],
                                     stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def count(self, needle: str) -> int:
        with self.lock:
            return sum(needle in line for line in self.lines)

    def close(self) -> None:
        stop(self.proc)


def marker(ns: str, monitor: Monitor, n: int) -> None:
    """Send the n-th marker from `ns` and wait (at most 10 s) until the monitor has printed it."""
    needle = f"udp sport {40000 + n} udp dport {MARKER_PORT}"
    deadline = time.monotonic() + 10
    while monitor.count(needle) == 0:
        assert time.monotonic() < deadline, "nft monitor trace printed no marker within 10 s"
        s = sock(ns, 2, 2)  # AF_INET, SOCK_DGRAM
        try:
            s.bind(("127.0.0.1", 40000 + n))
            s.sendto(b"m", ("127.0.0.1", MARKER_PORT))
        finally:
            s.close()
        time.sleep(0.05)


# ------------------------------------------------------------- the trace lines

IIF, OIF = r'\biif "([^"]+)"', r'\boif "([^"]+)"'
_LINE = re.compile(r"^trace id (\w+) (\S+) (\S+) (\S+) (.*)$")
_RULE = re.compile(r'^rule .*?(?:comment "((?:[^"\\]|\\.)*)" )?\(verdict ([^)]*)\)$')


@dataclass
class Traced:
    """One packet as the kernel traced it: its header fields and the events in ctkit's table."""
    hook: str  # pre | out
    header: str
    events: list = field(default_factory=list)

    def field(self, pattern: str) -> str | None:
        m = re.search(pattern, self.header)
        return m.group(1) if m else None

    @property
    def proto(self) -> str | None:
        for p in ("tcp", "udp"):
            if re.search(rf"\b{p} sport \d+", self.header):
                return p
        if "icmp type echo" in self.header:
            return "icmp"
        if "icmpv6 type echo" in self.header:
            return "icmpv6"
        return None

    @property
    def addrs(self) -> tuple[str | None, str | None]:
        return (self.field(r"\bip6? saddr (\S+)"), self.field(r"\bip6? daddr (\S+)"))

    @property
    def ports(self) -> tuple[int | None, int | None]:
        s, d = self.field(r"\b(?:tcp|udp) sport (\d+)"), self.field(r"\b(?:tcp|udp) dport (\d+)")
        return (int(s) if s else None, int(d) if d else None)

    @property
    def length(self) -> int | None:
        v4 = self.field(r"\bip length (\d+)")
        if v4:
            return int(v4)
        v6 = self.field(r"\bip6 length (\d+)")
        return int(v6) + 40 if v6 else None  # nft prints the IPv6 payload length


def parse_trace(lines: list[str]) -> list[Traced]:
    """The traced packets in order: one per `packet:` line of the trace table, with ctkit's events."""
    current: dict[str, Traced] = {}
    out: list[Traced] = []
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        tid, _family, table, chain, rest = m.groups()
        if table == "trace":
            if rest.startswith("packet: "):
                current[tid] = Traced(chain, rest[len("packet: "):])
                out.append(current[tid])
            continue
        if table != "ctkit" or tid not in current or rest.startswith("packet:"):
            continue
        ev = current[tid].events
        r = _RULE.match(rest)
        if r:
            comment = r.group(1).replace('\\"', '"') if r.group(1) is not None else None
            ev.append((chain, names.rule_id(comment), r.group(2).strip()))
        elif rest.startswith("policy "):
            ev.append((chain, None, "policy " + rest.split()[1]))
        else:
            ev.append((chain, None, rest.strip()))
    return out


# ------------------------------------------------------------------- the probes

def send(client: str, server: str, case: Case, probe: Probe) -> tuple[str, str, str]:
    """Run one probe as the differential test does (without flushing conntrack); (proto, initiator, target)."""
    policy_ns = server if case.side == "server" else client
    other_ns = client if policy_ns == server else server
    initiator, target = (other_ns, policy_ns) if probe.to == "policy" else (policy_ns, other_ns)
    server_addr, client_addr = NETS[probe.net]
    addr = server_addr if target == server else client_addr
    src = server_addr if initiator == server else client_addr
    if probe.kind == "tcp":
        listener = tcp_listen(target, addr, probe.port)
        try:
            tcp_probe(initiator, addr, probe.port, timeout=TIMEOUT, src=src)
        finally:
            listener.close()
    elif probe.kind == "udp":
        srv = udp_server(target, addr, probe.port)
        try:
            udp_exchange(initiator, srv, addr, probe.port, timeout=TIMEOUT, src=src,
                         **({"payload": probe.payload} if probe.payload is not None else {}))
        finally:
            srv.close()
    elif probe.kind == "icmp":
        icmp_echo(initiator, addr, src=src, timeout=TIMEOUT)
    elif probe.kind == "ftp":
        ftp_passive(initiator, target, addr, probe.port, timeout=TIMEOUT * 2, src=src)
    proto = {"ftp": "tcp", "icmp": "icmpv6" if probe.net == "v6" else "icmp"}.get(probe.kind, probe.kind)
    return proto, src, addr


def traced_probes(client: str, server: str, case: Case, probes, policy_ns: str, monitor, mark) -> list[tuple]:
    """Send each probe between two markers: (probe, its key, first and last monitor line it printed)."""
    mark(policy_ns, monitor, 0)
    windows = []
    for i, probe in enumerate(probes, start=1):
        with monitor.lock:
            start = len(monitor.lines)
        key = send(client, server, case, probe)
        mark(policy_ns, monitor, i)
        with monitor.lock:
            windows.append((probe, key, start, len(monitor.lines)))
        # a fresh table for the next probe (an FTP exchange leaves an expectation for its data port)
        run(policy_ns, "conntrack", "-F", check=False)
    return windows


def _collapse(events: list) -> list:
    """Consecutive equal events are one (nft writes an either-port rule as two rules with one comment)."""
    return [e for i, e in enumerate(events) if i == 0 or events[i - 1] != e]


def agree(kernel: list, hits: list) -> str | None:
    """None when the kernel's events are explain's; else the first difference. An undecided hit: the
    kernel may have found the rule matched (then the rest depends on what explain could not see)."""
    kernel, k = _collapse(kernel), 0
    decided = []
    for h in hits:
        if h.verdict == "undecided":
            if k < len(kernel) and kernel[k][:2] == (h.chain, h.rule):
                return None
            continue
        decided.append(h)
    want = _collapse([(h.chain, h.rule, "drop" if h.verdict == "reject" else h.verdict) for h in decided
                      if not (h.rule is None and h.verdict == "return")])
    return None if kernel[k:] == want else f"kernel {kernel[k:]} != explain {want}"


def explain_packets(case: Case, probe: Probe, plan, traced: list[Traced], key: tuple[str, str, str],
                    port: int | None, compare=None, seen=lambda step: True) -> tuple[list[str], int]:
    """Compare every traced packet of the probe's flows; (disagreements, packets compared)."""
    proto, initiator, target = key
    wrong, compared = [], 0
    flows: dict[tuple, dict] = {}  # (sport of the initiator) -> {"replied": bool, "dropped": bool}
    for t in traced:
        if t.proto != proto:
            continue
        (sa, da), (sp, dp) = t.addrs, t.ports
        if proto.startswith("icmp"):
            original = (sa, da) == (initiator, target) and "echo-request" in t.header
            reply = (sa, da) == (target, initiator) and "echo-reply" in t.header
            flow_key = t.field(r"\bicmpv?6? id (\d+)")
        else:
            original = (sa, da, dp) == (initiator, target, port)
            reply = (sa, da, sp) == (target, initiator, port)
            flow_key = sp if original else dp
        if not (original or reply):
            continue
        if flow_key not in flows and (reply or (proto == "tcp" and "tcp flags == syn " not in t.header + " ")):
            continue  # a late packet of an earlier probe's connection (its FIN), or a reply: not a flow start
        flow = flows.setdefault(flow_key, {"replied": False, "accepted": False})
        if reply and not flow["accepted"]:
            continue  # made by a reject (or an answer to a packet that never got through): not the flow's
        state = "established" if (reply or flow["replied"]) else "new"
        if reply:
            flow["replied"] = True
        hook_kw = f"iif {t.field(IIF)}" if t.hook == "pre" else f"oif {t.field(OIF)}"
        ends = (f"{_end(sa, sp)} -> {_end(da, dp)}")
        length = f" len {t.length}" if t.length else ""
        text = f"{proto} {ends} {hook_kw} state {state}{length} path {'input' if t.hook == 'pre' else 'output'}"
        x = explain(plan, parse_packet(text), "table inet ctkit")
        diff = (compare or agree)(t.events, [h for s in x.steps if s.skipped is None and seen(s) for h in s.hits])
        compared += 1
        if original and not any(e[-1] in ("drop", "policy drop") for e in t.events):
            flow["accepted"] = True
        if diff:
            wrong.append(f"  {probe.name}: {text}\n    {diff}")
    return wrong, compared


def _end(addr: str | None, port: int | None) -> str:
    assert addr is not None
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.policy)
def test_explain_agrees_with_nft_trace(lab, case):
    server = lab.netns("xsrv")
    client = lab.netns("xcli")
    lab.link(client, server, [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24", f"{CLIENT6}/64"],
             [f"{SERVER4}/24", f"{SERVER_LAN4}/24", f"{SERVER6}/64"])
    policy_ns = server if case.side == "server" else client
    plan = pipeline.compile_file(ROOT / "examples" / case.policy).plan
    backend_named("nft").apply(plan, policy_ns)
    run(policy_ns, "nft", "-f", "-", input=TRACE_TABLE)
    monitor = Monitor(policy_ns)
    try:
        windows = traced_probes(client, server, case, case.probes, policy_ns, monitor, marker)
    finally:
        monitor.close()
    wrong, compared = [], 0
    for probe, key, start, end in windows:  # the packets printed while the probe ran, up to its marker
        w, c = explain_packets(case, probe, plan, parse_trace(monitor.lines[start:end]), key, probe.port)
        wrong += w
        compared += c
    print(f"\n{case.policy}: {compared} traced packets compared with explain")
    assert compared >= len(case.probes), "fewer traced packets than probes: the trace did not work"
    assert not wrong, f"{case.policy}: explain and the kernel disagree:\n" + "\n".join(wrong)


def _explain_cli(*args: str) -> subprocess.CompletedProcess:
    import sys
    return subprocess.run([sys.executable, "-m", "ctkit", "explain", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_live_explain_shows_drift_and_the_kernel_agrees(lab):
    """A rule added by hand to ctkit's table: explain --netns walks the live ruleset (the hand-made drop),
    says the policy file's path differs (exit 1), and the kernel's trace of a real packet names that rule."""
    server = lab.netns("xsrv")
    client = lab.netns("xcli")
    lab.link(client, server, [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24"], [f"{SERVER4}/24", f"{SERVER_LAN4}/24"])
    policy = ROOT / "examples" / "dns-server.json"
    backend_named("nft").apply(pipeline.compile_file(policy).plan, server)
    text = f"tcp {CLIENT_LAN4}:41000 -> {SERVER_LAN4}:22 iif veth0"
    same = _explain_cli(str(policy), "--netns", server, "--packet", text)
    assert same.returncode == 0 and "no drift" in same.stdout, same.stdout + same.stderr
    run(server, "nft", "insert", "rule", "inet", "ctkit", "input", "tcp", "dport", "22", "counter", "drop",
        "comment", '"hand-edit"')
    drift = _explain_cli(str(policy), "--netns", server, "--packet", text, "--json")
    assert drift.returncode == 1, drift.stderr
    data = json.loads(drift.stdout)
    assert data["drift"] and data["live"]["verdict"] == "drop" and data["policy"]["verdict"] == "accept"
    assert data["live"]["decided_by"] == "input/hand-edit"
    run(server, "nft", "-f", "-", input=TRACE_TABLE)
    monitor = Monitor(server)
    try:
        marker(server, monitor, 0)
        s = sock(client, 2, 1)  # AF_INET, SOCK_STREAM
        s.settimeout(TIMEOUT)
        try:
            s.bind((CLIENT_LAN4, 41000))
            s.connect((SERVER_LAN4, 22))
        except OSError:
            pass
        finally:
            s.close()
        marker(server, monitor, 1)
    finally:
        monitor.close()
    syns = [t for t in parse_trace(monitor.lines) if t.proto == "tcp" and t.ports == (41000, 22)]
    assert syns, "the SYN was not traced"
    assert syns[0].events == [("notrack-pre", None, "policy accept"), ("input", "hand-edit", "drop")]


def test_live_explain_reads_ctkits_iptables_chains(lab):
    """The same drift on the iptables backend: a hand-made DROP in ctkit's chain; the live explain names it
    and the kernel's counter for that rule rose when the packet was sent."""
    server = lab.netns("xsrv")
    client = lab.netns("xcli")
    lab.link(client, server, [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24"], [f"{SERVER4}/24", f"{SERVER_LAN4}/24"])
    policy = ROOT / "examples" / "dns-server.json"
    backend_named("iptables-nft").apply(pipeline.compile_file(policy).plan, server)
    run(server, "iptables-nft", "-I", "CTKIT-INPUT", "1", "-p", "tcp", "--dport", "22", "-m", "comment",
        "--comment", "hand-edit", "-j", "DROP")
    text = f"tcp {CLIENT_LAN4}:41001 -> {SERVER_LAN4}:22 iif veth0"
    drift = _explain_cli(str(policy), "--netns", server, "--backend", "iptables", "--iptables-variant", "nft",
                         "--packet", text, "--json")
    assert drift.returncode == 1, drift.stderr
    data = json.loads(drift.stdout)
    assert data["live"]["decided_by"] == "input/hand-edit" and data["policy"]["verdict"] == "accept"
    tcp_probe(client, SERVER_LAN4, 22, timeout=TIMEOUT, src=CLIENT_LAN4)
    listing = run(server, "iptables-nft", "-L", "CTKIT-INPUT", "-v", "-x", "-n").stdout
    line = next(ln for ln in listing.splitlines() if "hand-edit" in ln)
    assert int(line.split()[0]) >= 1, listing


# ------------------------------------------------- iptables: xtables-monitor --trace

_XPACKET = re.compile(r"^PACKET: \d+ (\w+) (.*)$")
_XTRACE = re.compile(r"^\s*TRACE: \d+ (\w+) (\S+)\s*(.*)$")
_TCP_FLAGS = ("SYN", "ACK", "FIN", "RST", "PSH", "URG")
_BUILTINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


def _header(fields: str) -> str:
    """xtables-monitor's packet fields in the words Traced reads (nft monitor trace's)."""
    kv = dict(t.split("=", 1) for t in fields.split() if "=" in t)
    flags = [t for t in fields.split() if t in _TCP_FLAGS]
    ip = "ip6" if ":" in kv.get("SRC", "") else "ip"
    out = []
    if "IN" in kv and kv["IN"]:
        out.append(f'iif "{kv["IN"]}"')
    if "OUT" in kv and kv["OUT"]:
        out.append(f'oif "{kv["OUT"]}"')
    out.append(f"{ip} saddr {kv.get('SRC')} {ip} daddr {kv.get('DST')}")
    if "LEN" in kv:
        out.append(f"{ip} length {int(kv['LEN']) - (40 if ip == 'ip6' else 0)}")
    if "SPORT" in kv:
        proto = "tcp" if flags else "udp"
        out.append(f"{proto} sport {kv['SPORT']} {proto} dport {kv['DPORT']}")
        if flags == ["SYN"]:
            out.append("tcp flags == syn")
    return " ".join(out) + " "


def parse_xtables(lines: list[str]) -> list[Traced]:
    """The packets xtables-monitor --trace printed, each with (rule id, verdict) for the rules of ctkit's
    chains that matched (the rule's comment names it)."""
    packet: dict[str, str] = {}
    current: dict[str, Traced] = {}
    out: list[Traced] = []
    for line in lines:
        m = _XPACKET.match(line)
        if m:
            packet[m.group(1)] = m.group(2)
            continue
        m = _XTRACE.match(line)
        if not m:
            continue
        tid, where, rest = m.groups()
        parts = where.split(":")
        table, chain, kind = parts[0], parts[1], parts[2]
        if table == "trace":
            if kind == "rule" and tid in packet:
                current[tid] = Traced(chain, _header(packet[tid]))
                out.append(current[tid])
            continue
        if kind != "rule" or tid not in current:
            continue
        try:
            tokens = shlex.split(rest)
        except ValueError:
            continue
        comment = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--comment"), None)
        rid = names.rule_id(comment)
        if rid is None:
            continue  # the built-in chain's jump into ctkit's chain
        verdict = {"ACCEPT": "accept", "DROP": "drop", "CONTINUE": "continue", "0xfffffffb": "return",
                   "RETURN": "return"}.get(parts[4], parts[4].lower())
        # how ctkit's iptables chains say accept (ctkit/accept_mark.py): RETURN from the top-level chain
        # (CTKIT-INPUT, ...) to the built-in one; below it, the accept bit set (then returned with)
        if verdict == "return" and chain[len("CTKIT-"):] in _BUILTINS:
            verdict = "accept"
        if accept_mark.SET_BIT in rest:
            verdict = "accept"
        if parts[4] in ("JUMP", "GOTO"):
            target = parts[5][len("CTKIT-"):]
            if target.startswith(("TG-", "TR-")):
                continue  # how iptables says `when: toggle`: the chain's rules are what the toggle guards
            verdict = f"{parts[4].lower()} {target}"
        current[tid].events.append((rid, verdict))
    return out


def agree_iptables(kernel: list, hits: list) -> str | None:
    """Like agree(), in iptables' terms: no chain names (ctkit's chains there are per table and built-in),
    a base chain's drop policy is ctkit's last rule '<chain>: policy drop', an accept policy no rule, and
    the rules ctkit wrote for one policy rule (one target each: CONNMARK, then ACCEPT) are that rule."""
    joined: list = []
    for e in kernel:
        if joined and joined[-1][0] == e[0] and joined[-1][1] == "continue":
            joined[-1] = e
        else:
            joined.append(e)
    kernel = _collapse(joined)
    want = []
    for h in hits:
        if h.verdict == "undecided":
            if kernel[len(want):len(want) + 1] and kernel[len(want)][0] == h.rule:
                return None
            continue
        if h.rule is None:
            if h.verdict == "policy drop":
                want.append((h.chain, "drop"))
            continue
        want.append((h.rule, "drop" if h.verdict == "reject" else h.verdict))
    want = _collapse(want)
    return None if kernel == want else f"kernel {kernel} != explain {want}"


class XMonitor(Monitor):
    """xtables-monitor --trace in a namespace (iptables-nft's trace events, rules in iptables syntax), line-buffered
    (it writes through stdio: a pipe would hold its lines back)."""

    def __init__(self, ns: str):  # noqa: D107 - same as Monitor, another tool
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "stdbuf", "-oL", "xtables-monitor", "--trace"],
                                     stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()


def xmarker(ns: str, monitor: Monitor, n: int) -> None:
    """marker() for xtables-monitor: its packet lines say SPT/DPT as SPORT=/DPORT=."""
    needle = f"SPORT={40000 + n} DPORT={MARKER_PORT}"
    deadline = time.monotonic() + 10
    while monitor.count(needle) == 0:
        assert time.monotonic() < deadline, "xtables-monitor --trace printed no marker within 10 s"
        s = sock(ns, 2, 2)
        try:
            s.bind(("127.0.0.1", 40000 + n))
            s.sendto(b"m", ("127.0.0.1", MARKER_PORT))
        finally:
            s.close()
        time.sleep(0.05)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.policy)
def test_explain_agrees_with_iptables_trace(lab, case):
    if case.policy == "game-server-flood.json":
        pytest.skip("xtables-monitor 1.8.9 exits ('Operation not permitted') when it prints the u32 match "
                    "ctkit writes for a payload; the payload rules are compared on nft")
    """The same matrix on the iptables backend (nf_tables variant): the rules xtables-monitor --trace
    reports for each packet (by ctkit's rule comment) and their verdicts are the ones explain printed.
    Tracing starts after the raw table, so ctkit's raw rules (notrack, zones, timeouts, helpers) are
    compared on nft only (whether a packet was tracked still shows in the filter rules it meets: ct state
    untracked), and IPv4 only: xtables-monitor 1.8.9 stops at the first IPv6 rule it prints."""
    server = lab.netns("xsrv")
    client = lab.netns("xcli")
    lab.link(client, server, [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24", f"{CLIENT6}/64"],
             [f"{SERVER4}/24", f"{SERVER_LAN4}/24", f"{SERVER6}/64"])
    policy_ns = server if case.side == "server" else client
    plan = pipeline.compile_file(ROOT / "examples" / case.policy).plan
    backend_named("iptables-nft").apply(plan, policy_ns)
    # IPv4 only: xtables-monitor 1.8.9 exits ("unsupported layer 4 protocol value") on the first
    # ip6tables rule it prints
    run(policy_ns, "nft", "-f", "-", input=trace_table(IPTABLES_TRACE_PRIORITY, "meta nfproto ipv4"))
    monitor = XMonitor(policy_ns)
    probes = [p for p in case.probes if p.kind in ("tcp", "udp", "ftp") and p.net != "v6"]  # ICMP: no ports
    try:
        windows = traced_probes(client, server, case, probes, policy_ns, monitor, xmarker)
    finally:
        monitor.close()
    wrong, compared = [], 0
    for probe, key, start, end in windows:
        w, c = explain_packets(case, probe, plan, parse_xtables(monitor.lines[start:end]), key, probe.port,
                               compare=agree_iptables, seen=lambda step: not step.chain.startswith(RAW_CHAINS))
        wrong += w
        compared += c
    print(f"\n{case.policy}: {compared} traced packets compared with explain (iptables-nft)")
    assert compared >= len(probes), "fewer traced packets than probes: the trace did not work"
    assert not wrong, f"{case.policy}: explain and the kernel (iptables) disagree:\n" + "\n".join(wrong)
