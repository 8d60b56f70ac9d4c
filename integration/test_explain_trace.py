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
    tcp_listen,
    tcp_probe,
    udp_exchange,
    udp_server,
)
from matrix import CASES, NETS, Case, Probe

from ctkit import names, pipeline
from ctkit.explain import explain, parse_packet

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.5
TRACE_TABLE = ("table inet trace {\n"
               "  chain pre { type filter hook prerouting priority -400; meta nftrace set 1; }\n"
               "  chain out { type filter hook output priority -400; meta nftrace set 1; }\n}\n")
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
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


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
                    port: int | None) -> tuple[list[str], int]:
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
        diff = agree(t.events, [h for s in x.steps if s.skipped is None for h in s.hits])
        compared += 1
        if original and not any(e[2] in ("drop", "policy drop") for e in t.events):
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
        marker(policy_ns, monitor, 0)
        windows = []
        for i, probe in enumerate(case.probes, start=1):
            with monitor.lock:
                start = len(monitor.lines)
            key = send(client, server, case, probe)
            marker(policy_ns, monitor, i)
            with monitor.lock:
                windows.append((probe, key, start, len(monitor.lines)))
            # a fresh table for the next probe (an FTP exchange leaves an expectation for its data port)
            run(policy_ns, "conntrack", "-F", check=False)
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
