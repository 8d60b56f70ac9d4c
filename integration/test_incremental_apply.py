"""An apply changes only what differs, on the real kernel (ctkit/backends/nft/diff.py, the iptables
backend's chain-by-chain transaction and ipset deltas).

Every claim is read back from the kernel, never from ctkit's own output alone:
  * re-applying any example sends nothing: `nft monitor` in the namespace announces no event, and
    iptables-save / ip6tables-save / ipset save are byte-identical (apart from their comment lines);
  * a rule that an apply does not touch keeps its kernel counters, also when another rule of its
    chain changes (nft: the rule is not touched; iptables: the refilled chain carries its counters);
  * after each kind of edit, `ctkit plan --json` names exactly that difference and the incrementally
    changed kernel equals a fresh apply of the new policy in another namespace;
  * members added at run time (`ctkit set add`) survive re-applies, while declared members follow
    the file.

Every test makes its own namespaces (the `lab` fixture removes them, also on failure) and keeps
ctkit's lock and ownership record under tmp_path (CTKIT_STATE_DIR). The applies under test run as
the real command line (independent ones in parallel: each process spends about a second starting),
`ctkit plan` runs through the command line's own code with many plans in one process, and the
applies that only prepare a test run in one process through ctkit's Python API.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lab import backend_args, backend_named, nft_json, run, stop, tcp_connect, tcp_listen, udp_exchange, udp_server

from ctkit import pipeline
from ctkit.errors import CompileError
from ctkit.kernel.netns import entered

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json")) + sorted((ROOT / "examples").glob("*.yaml"))
BLOCKLIST = ROOT / "examples" / "blocklist-set.json"
BACKENDS = ("nft", "iptables-nft", "iptables-legacy")
TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}
CLI_TIMEOUT = 120  # seconds for one ctkit command
PARALLEL = 8  # ctkit commands at once


# ------------------------------------------------------------------ running ctkit

@pytest.fixture
def env(tmp_path):
    """ctkit's environment: its lock and ownership record under tmp_path, not the host's /run/ctkit."""
    return {**os.environ, "CTKIT_STATE_DIR": str(tmp_path / "state")}


def ctkit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, env=env,
                          timeout=CLI_TIMEOUT)


def ok(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert proc.returncode == code, f"{' '.join(proc.args[2:])}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def ctkit_all(env: dict, calls: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Independent ctkit commands (each in its own namespace), at most PARALLEL at once, in order."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda args: ctkit(env, *args), calls))


_SETUP = """
import json, sys
from ctkit import pipeline, service
from ctkit.backends import registry
for path, ns, kind, variant in json.loads(sys.argv[1]):
    service.apply(pipeline.compile_file(path), registry.get(kind, variant), ns)
"""


def setup_applies(env: dict, applies: list[tuple[str, str, str]]) -> None:
    """(policy, netns, backend) applies that only prepare a test, in one process through ctkit's Python
    API (ctkit/service.py, which the CLI calls): each ctkit process spends about a second compiling
    the policy schema, and these would be dozens."""
    todo = [(path, ns, *(backend.partition("-")[::2])) for path, ns, backend in applies]
    todo = [(path, ns, kind, var or "auto") for path, ns, kind, var in todo]
    proc = subprocess.run([sys.executable, "-c", _SETUP, json.dumps(todo)], capture_output=True, text=True,
                          env=env, timeout=CLI_TIMEOUT * 2)
    assert proc.returncode == 0, f"setup applies failed:\n{proc.stderr}"


_DRIVER = """
import json, sys
from typer.testing import CliRunner
from ctkit.cli import app
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    crash = r.exception is not None and not isinstance(r.exception, SystemExit)
    out.append({"code": 99 if crash else r.exit_code, "stdout": r.stdout, "stderr": r.stderr + (repr(r.exception) if crash else "")})
print(json.dumps(out))
"""


def ctkit_one_process(env: dict, calls: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """ctkit commands that read the kernel only (plan), through the command line's own code (ctkit.cli's
    typer app: options, output, exit codes) in one process, one after another: dozens of processes would
    each spend about a second starting. An exception escaping the command is exit 99."""
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(calls)], capture_output=True, text=True,
                          env=env, timeout=CLI_TIMEOUT * 2)
    assert proc.returncode == 0, f"the ctkit driver failed:\n{proc.stderr}"
    return [subprocess.CompletedProcess(["python", "-m", "ctkit", *args], r["code"], r["stdout"], r["stderr"])
            for args, r in zip(calls, json.loads(proc.stdout), strict=True)]


def iptables_refuses(path: Path) -> bool:
    """The iptables backend refuses the policy at compile time (a named CompileError)."""
    try:
        backend_named("iptables").generate(pipeline.compile_file(path).plan)
    except CompileError:
        return True
    return False


def variant(backend: str) -> str:
    return backend.partition("-")[2]


def need_ipset(backend: str) -> None:
    if backend != "nft" and shutil.which("ipset") is None:
        pytest.skip("the iptables backend's sets need the ipset command (Debian package ipset)")


def write(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1))
    return str(path)


# ------------------------------------------------------------------ what the kernel holds

def nft_ruleset(ns: str) -> str:
    """`nft -a list ruleset` (handles included) without the counter values and set timers, which
    change on their own."""
    text = run(ns, "nft", "-a", "list", "ruleset").stdout
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return re.sub(r" expires [0-9dhms]+", "", text)


def saved(ns: str, family: str, var: str, *opts: str) -> str:
    """iptables-save / ip6tables-save of one variant, without its comment lines (the timestamps)."""
    out = run(ns, f"{TOOL[family]}-{var}-save", *opts).stdout
    return "".join(line + "\n" for line in out.split("\n") if line and not line.startswith("#"))


def ipsets(ns: str) -> str:
    """`ipset save` without the seconds left of each member's timeout, which count down, and without the
    random hash seed (initval) the kernel gives each set."""
    if shutil.which("ipset") is None:
        return ""
    out = run(ns, "ipset", "save").stdout
    return "".join((re.sub(r" timeout \d+", "", ln) if ln.startswith("add ") else re.sub(r" initval 0x[0-9a-f]+", "", ln))
                   + "\n" for ln in out.split("\n") if ln)


def snapshot(ns: str, backend: str) -> dict[str, str]:
    """Everything an apply of this backend could change in the namespace, as the kernel lists it."""
    if backend == "nft":
        return {"nft": nft_ruleset(ns)}
    var = variant(backend)
    return {"iptables-save": saved(ns, "ipv4", var), "ip6tables-save": saved(ns, "ipv6", var),
            "ipset save": ipsets(ns)}


def canonical_nft(ns: str) -> dict:
    """ctkit's table from `nft -j list table`, without handles, counter values and set timers, chains,
    sets and objects by name (their listing order is the order they were created in), rules in order."""
    out: dict = {"chains": {}, "sets": {}, "objects": {}, "rules": {}}
    for item in nft_json(ns, "list", "table", "inet", "ctkit"):
        (kind, body), = item.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "table":
            out["table"] = body
        elif kind == "chain":
            out["chains"][body["name"]] = body
        elif kind == "set":
            elems = [{"elem": {k: v for k, v in e["elem"].items() if k != "expires"}} if isinstance(e, dict)
                     and "elem" in e else e for e in body.get("elem", [])]
            out["sets"][body["name"]] = dict(body, elem=sorted(elems, key=json.dumps))
        elif kind == "rule":
            expr = [{"counter": "counter"} if "counter" in e else e for e in body["expr"]]
            out["rules"].setdefault(body["chain"], []).append(dict(body, expr=expr))
        else:
            out["objects"][f"{kind} {body['name']}"] = body
    return out


def canonical_save(text: str) -> dict:
    """iptables-save output without counters: per table the chain declarations by name and each chain's
    rules in order. A table without rules, user chains or a non-ACCEPT policy is left out:
    iptables-legacy instantiates an empty table whenever something reads it."""
    tables: dict = {}
    table = None
    for line in text.split("\n"):
        line = re.sub(r" \[\d+:\d+\]$", "", line)
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {"chains": {}, "rules": {}})
        elif line.startswith(":") and table is not None:
            name, policy = line[1:].split(" ")[:2]
            table["chains"][name] = policy
        elif line.startswith("-A ") and table is not None:
            chain = line.split(" ")[1]
            table["rules"].setdefault(chain, []).append(line)
    return {name: t for name, t in tables.items()
            if t["rules"] or any(p not in ("ACCEPT",) for p in t["chains"].values())}


SYSCTLS = ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream", "nf_conntrack_tcp_timeout_established")


def sysctls(ns: str) -> dict[str, str]:
    """Per-namespace conntrack timeouts the policies here set."""
    out = {}
    with entered(ns):
        for name in SYSCTLS:
            with open(f"/proc/sys/net/netfilter/{name}") as f:
                out[name] = f.read().strip()
    return out


def canonical(ns: str, backend: str) -> dict:
    if backend == "nft":
        return {"nft": canonical_nft(ns), "sysctl": sysctls(ns)}
    var = variant(backend)
    return {"ipv4": canonical_save(saved(ns, "ipv4", var)), "ipv6": canonical_save(saved(ns, "ipv6", var)),
            "ipsets": sorted(ipsets(ns).split("\n")), "sysctl": sysctls(ns)}


# ------------------------------------------------------------------ nft monitor

class Monitor:
    """`nft monitor` in one namespace. The events between start() and stop() are exactly those of the
    commits in between: both ends are marked by a commit of our own (an empty table created, then
    deleted) and the kernel delivers events to the socket in commit order, so no fixed sleep decides
    what was seen."""

    MARK = "ctkinc_mark"

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []
        self.marks = 0
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.cond = threading.Condition()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def _wait_for(self, line: str, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while line not in self.lines:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(left)
            return self.lines.index(line)

    def start(self) -> Monitor:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "nft", "monitor"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        for _ in range(20):  # until the monitor's socket is subscribed: at most 20 marks, 0.25 s each
            name = f"{self.MARK}{self.marks}"
            self.marks += 1
            run(self.ns, "nft", "add", "table", "inet", name)
            at = self._wait_for(f"add table inet {name}", 0.25)
            if at is not None:
                self.begin = at + 1
                return self
        self.stop()
        raise AssertionError(f"nft monitor in {self.ns} announced none of our own commits")

    def stop(self) -> list[str]:
        """Delete the marks and return the event lines announced between the two ends."""
        try:
            if not self.marks or self.proc.poll() is not None:
                return []
            for i in range(self.marks):
                run(self.ns, "nft", "delete", "table", "inet", f"{self.MARK}{i}")
            end = self._wait_for(f"delete table inet {self.MARK}0", 5)
            assert end is not None, f"nft monitor in {self.ns} did not announce the end mark: {self.lines}"
            with self.cond:
                between = self.lines[self.begin:end]
            # the start mark's own trailer ("# new generation N by process P (nft)") comes first
            if between and between[0].startswith("# new generation") and between[0].endswith("(nft)"):
                between = between[1:]
            return between
        finally:
            stop(self.proc)
            self.thread.join(5)


# ------------------------------------------------------------------ 1. re-apply sends nothing

@pytest.mark.parametrize("backend", BACKENDS)
def test_reapplying_every_example_sends_nothing(lab, env, backend):
    examples = [p for p in EXAMPLES if backend == "nft" or not iptables_refuses(p)]
    assert examples
    cases = [(str(p), lab.netns("re")) for p in examples]
    args = backend_args(backend)
    setup_applies(env, [(p, ns, backend) for p, ns in cases])
    before = {ns: snapshot(ns, backend) for _p, ns in cases}
    monitors = []
    try:
        for _p, ns in cases:
            monitors.append(Monitor(ns).start())
        second = ctkit_all(env, [["apply", p, "-n", ns, "--json", *args] for p, ns in cases])
    finally:
        events = [m.stop() for m in monitors]
    plans = ctkit_one_process(env, [["plan", p, "-n", ns, *args] for p, ns in cases])
    failures = []
    for (path, ns), proc, seen, plan in zip(cases, second, events, plans, strict=True):
        name = Path(path).name
        if proc.returncode != 0:
            failures.append(f"{name}: second apply exit {proc.returncode}: {proc.stderr}")
            continue
        if json.loads(proc.stdout).get("changed") is not False:
            failures.append(f"{name}: second apply --json does not say \"changed\": false")
        if seen:
            failures.append(f"{name}: the second apply made {len(seen)} nft monitor events: {seen[:10]}")
        after = snapshot(ns, backend)
        for what, text in before[ns].items():
            if after[what] != text:
                failures.append(f"{name}: {what} differs after the second apply:\n{text}\n---\n{after[what]}")
        if plan.returncode != 0:
            failures.append(f"{name}: ctkit plan exit {plan.returncode} (0: nothing pending):\n{plan.stdout}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ 2. counters of untouched rules

PROBE_PORT, PROBE_TCP_PORT = 5001, 5002
PACKETS = 20


def counter_policy(output_rules: list[dict], input_extra: list[dict] = (), above: list[dict] = ()) -> dict:
    """The probe rules in input; another rule in input and one in output, which the edits change."""
    return {"version": 1, "chains": {
        "input": {"policy": "accept", "rules": [
            *above,
            {"name": "probe", "protocol": "udp", "dport": PROBE_PORT, "action": "accept"},
            {"name": "probe-tcp", "protocol": "tcp", "dport": PROBE_TCP_PORT, "action": "accept"},
            *input_extra]},
        "output": {"policy": "accept", "rules": output_rules}}}


def udp_traffic(ns: str, count: int) -> None:
    """`count` datagrams to the probe port over the namespace's loopback, each one answered."""
    server = udp_server(ns, "127.0.0.1", PROBE_PORT)
    try:
        for i in range(count):
            assert udp_exchange(ns, server, "127.0.0.1", PROBE_PORT, timeout=1.0) == (True, True), f"datagram {i}"
    finally:
        server.close()


def tcp_traffic(ns: str) -> None:
    listener = tcp_listen(ns, "127.0.0.1", PROBE_TCP_PORT)
    try:
        assert tcp_connect(ns, "127.0.0.1", PROBE_TCP_PORT, timeout=1.0)
    finally:
        listener.close()


def probe_counters(ns: str, backend: str) -> dict[str, tuple]:
    """The kernel's (packets, bytes) of the probe rules (nft: and their handles)."""
    out = {}
    if backend == "nft":
        for item in nft_json(ns, "list", "table", "inet", "ctkit"):
            rule = item.get("rule")
            if rule and rule.get("comment") in ("probe", "probe-tcp"):
                c = next(e["counter"] for e in rule["expr"] if "counter" in e)
                out[rule["comment"]] = (c["packets"], c["bytes"], rule["handle"])
        return out
    text = saved(ns, "ipv4", variant(backend), "-c", "-t", "filter")
    for line in text.split("\n"):
        m = re.match(r"\[(\d+):(\d+)\] -A CTKIT-INPUT .*--comment (probe|probe-tcp) ", line)
        if m:
            out[m.group(3)] = (int(m.group(1)), int(m.group(2)))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_rules_an_apply_does_not_touch_keep_their_counters(lab, env, tmp_path, backend):
    ns = lab.netns("cnt")
    args = ["-n", ns, *backend_args(backend)]
    out_rule = {"name": "other-out", "protocol": "tcp", "dport": 7000, "action": "accept"}
    other_in = {"name": "other-in", "protocol": "tcp", "dport": 6000, "action": "accept"}
    # (edit, policy, what the kernel's listing holds once the edit is in)
    steps = [
        # another chain: for iptables a chain that did not change keeps its counters
        ("change-other-chain", counter_policy([dict(out_rule, dport=7001)]), "dport 7001"),
        ("insert-other-chain", counter_policy([{"name": "new-out", "protocol": "udp", "dport": 7002,
                                                "action": "accept"}, dict(out_rule, dport=7001)]), "dport 7002"),
    ]
    # the same chain as well: nft keeps every rule it does not touch; iptables refills a changed
    # chain and writes each rule it already held with its counters (-c PACKETS BYTES)
    steps += [
        ("add-in-same-chain", counter_policy([dict(out_rule, dport=7001)], input_extra=[other_in]), "dport 6000"),
        ("change-in-same-chain", counter_policy([dict(out_rule, dport=7001)],
                                                input_extra=[dict(other_in, dport=6001)]), "dport 6001"),
        ("insert-above", counter_policy([dict(out_rule, dport=7001)], input_extra=[dict(other_in, dport=6001)],
                                        above=[{"name": "above", "protocol": "udp", "dport": 5003,
                                                "action": "accept"}]), "dport 5003"),
    ]
    ok(ctkit(env, "apply", write(tmp_path, "base", counter_policy([out_rule])), *args))
    udp_traffic(ns, PACKETS)
    tcp_traffic(ns)
    counted = probe_counters(ns, backend)
    assert counted["probe"][0] == PACKETS, counted
    assert counted["probe-tcp"][0] > 0, counted
    for name, policy, marker in steps:
        ok(ctkit(env, "apply", write(tmp_path, name, policy), *args))
        listing = (run(ns, "nft", "list", "table", "inet", "ctkit").stdout if backend == "nft"
                   else saved(ns, "ipv4", variant(backend)))
        assert marker in listing, f"after {name}: the edit is not in the kernel:\n{listing}"
        now = probe_counters(ns, backend)
        assert now == counted, f"after {name}: the probe rules' counters (and handles) changed: {counted} -> {now}"
    if backend == "nft":  # the inserted rule really is above the probe
        input_rules = [i["rule"]["comment"] for i in nft_json(ns, "list", "chain", "inet", "ctkit", "input")
                       if "rule" in i]
        assert input_rules[:2] == ["above", "probe"], input_rules
    udp_traffic(ns, 5)  # the same rule goes on counting
    assert probe_counters(ns, backend)["probe"][0] == PACKETS + 5


# ------------------------------------------------------------------ 3. the edit matrix

EDIT_BASE = {
    "version": 1,
    "conntrack": {"timeouts": {"udp": 30}},
    "helpers": [{"name": "ftp-server", "helper": "ftp", "protocol": "tcp", "ports": [21], "daddr": ["192.0.2.10"]}],
    "sets": {"blocklist": {"type": "ipv4_addr", "interval": True, "elements": ["198.51.100.0/24", "203.0.113.7"]}},
    "chains": {
        "input": {"policy": "drop", "rules": [
            {"name": "established", "ct_state": ["established", "related"], "action": "accept"},
            {"name": "blocked", "saddr": "@blocklist", "action": "drop"},
            {"name": "ssh", "protocol": "tcp", "dport": 22, "action": "accept"},
            {"name": "dns", "protocol": "udp", "dport": 53, "action": "accept"},
            {"name": "to-web", "protocol": "tcp", "jump": "web"},
            {"name": "icmp", "protocols": ["icmp", "icmpv6"], "action": "accept"}]},
        "web": {"rules": [{"name": "http", "protocol": "tcp", "dport": [80, 443], "action": "accept"},
                          {"name": "alt", "protocol": "tcp", "dport": ["8000-8099", 8443], "action": "accept"}]}}}


def _rules(doc: dict, chain: str = "input") -> list[dict]:
    return doc["chains"][chain]["rules"]


def _rename_web(doc: dict) -> None:
    doc["chains"]["www"] = doc["chains"].pop("web")
    _rules(doc)[4]["jump"] = "www"


EDITS = {
    "add-rule": lambda d: _rules(d).insert(3, {"name": "ntp", "protocol": "udp", "dport": 123, "action": "accept"}),
    "remove-rule": lambda d: _rules(d).pop(2),
    "change-rule": lambda d: _rules(d)[2].update(dport=2222),
    "move-rule": lambda d: _rules(d).insert(0, _rules(d).pop()),  # icmp from the end to the top
    "add-element": lambda d: d["sets"]["blocklist"]["elements"].append("192.0.2.99"),
    "change-helper": lambda d: d["helpers"][0].update(helper="tftp", protocol="udp", ports=[69]),
    "change-sysctl": lambda d: d["conntrack"]["timeouts"].update(udp=45),
    "rename-chain": _rename_web,
    # a rule with an interval set renamed: libnftables 1.0.6 aborts on `replace rule` of such a rule
    "rename-ranged-rule": lambda d: d["chains"]["web"]["rules"][1].update(name="alt-web"),
}

_BOTH = ("ipv4 ", "ipv6 ")
# (kind, action, subject) of each edit's plan items; the set of the plan's settings that would change
EXPECTED = {
    "nft": {
        "add-rule": [("rule", "add", "input/ntp")],
        "remove-rule": [("rule", "remove", "input/ssh")],
        "change-rule": [("rule", "change", "input/ssh")],
        "move-rule": [("rule", "move", "input/icmp")],
        "add-element": [("elements", "add", "set blocklist")],
        "change-helper": [("object", "change", "ct helper ftp-server"),
                          ("rule", "change", "helper-pre/helper/ftp-server")],
        "change-sysctl": [],
        "rename-chain": [("rule", "change", "input/to-web"), ("chain", "add", "chain www"), ("rule", "add", "www/http"),
                         ("rule", "add", "www/alt"), ("chain", "remove", "chain web"), ("rule", "remove", "web/http"),
                         ("rule", "remove", "web/alt")],
        "rename-ranged-rule": [("rule", "change", "web/alt-web")],
    },
    "iptables": {
        "add-rule": [("rule", "add", f"{f}filter/CTKIT-INPUT/ntp") for f in _BOTH],
        "remove-rule": [("rule", "remove", f"{f}filter/CTKIT-INPUT/ssh") for f in _BOTH],
        "change-rule": [("rule", "change", f"{f}filter/CTKIT-INPUT/ssh") for f in _BOTH],
        "move-rule": [("rule", "move", f"{f}filter/CTKIT-INPUT/icmp") for f in _BOTH],
        "add-element": [("elements", "add", "ipset ctkit-blocklist")],
        "change-helper": [("rule", "change", "ipv4 raw/CTKIT-PREROUTING/helper/ftp-server")],  # CT --helper: no object
        "change-sysctl": [],
        "rename-chain": [x for f in _BOTH for x in (("rule", "change", f"{f}filter/CTKIT-INPUT/to-web"),
                                                     ("chain", "add", f"chain {f}filter/CTKIT-www"),
                                                     ("chain", "remove", f"chain {f}filter/CTKIT-web"))],
        "rename-ranged-rule": [x for f in _BOTH for x in (("rule", "add", f"{f}filter/CTKIT-web/alt-web"),
                                                           ("rule", "remove", f"{f}filter/CTKIT-web/alt"))],
    },
}
# what an item's after text must hold, where the edit names a value
AFTER = {"add-element": "192.0.2.99", "change-rule": "2222"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_edit_is_planned_exactly_and_applied_like_a_fresh_apply(lab, env, tmp_path, backend):
    need_ipset(backend)
    args = backend_args(backend)
    base = write(tmp_path, "base", EDIT_BASE)
    edits = {}
    for name, edit in EDITS.items():
        doc = copy.deepcopy(EDIT_BASE)
        edit(doc)
        edits[name] = (write(tmp_path, name, doc), lab.netns("inc"), lab.netns("new"))
    # the base in one namespace per edit, and the edited policy fresh in another
    setup_applies(env, [(base, inc, backend) for _p, inc, _n in edits.values()]
                  + [(path, new, backend) for path, _i, new in edits.values()])
    plans = ctkit_one_process(env, [["plan", path, "-n", inc, "--json", *args] for path, inc, _n in edits.values()])
    applies = ctkit_all(env, [["apply", path, "-n", inc, *args] for path, inc, _n in edits.values()])
    expected = EXPECTED["nft" if backend == "nft" else "iptables"]
    failures = []
    for (name, (_path, inc, new)), plan, applied in zip(edits.items(), plans, applies, strict=True):
        if plan.returncode != 1:
            failures.append(f"{name}: plan exit {plan.returncode} (1: changes pending): {plan.stderr}")
            continue
        result = json.loads(plan.stdout)
        items = [(i["kind"], i["action"], i["subject"]) for i in result["items"]]
        if sorted(items) != sorted(expected[name]):
            failures.append(f"{name}: plan items {items}, expected {expected[name]}")
        if name in AFTER and not any(AFTER[name] in (i["after"] or "") for i in result["items"]):
            failures.append(f"{name}: no plan item shows {AFTER[name]}: {result['items']}")
        settings = {s["key"]: s["result"] for s in result["settings"] if s["result"] != "unchanged"
                    and not s["result"].startswith("absent")}
        want_settings = {"timeouts.udp": "would change"} if name == "change-sysctl" else {}
        if settings != want_settings:
            failures.append(f"{name}: plan settings {settings}, expected {want_settings}")
        if applied.returncode != 0:
            failures.append(f"{name}: apply exit {applied.returncode}: {applied.stderr}")
            continue
        got, fresh = canonical(inc, backend), canonical(new, backend)
        if got != fresh:
            diff = {k: (got[k], fresh[k]) for k in got if got[k] != fresh[k]}
            failures.append(f"{name}: the kernel after the incremental apply differs from a fresh apply "
                            f"(incremental, fresh): {json.dumps(diff, indent=1)}")
    assert not failures, "\n".join(failures)


def _toggle_policy(value: bool) -> dict:
    return {"version": 1, "toggles": {"maint": value}, "chains": {"input": {"policy": "accept", "rules": [
        {"name": "maint", "when": "maint", "protocol": "tcp", "dport": 80, "action": "drop"},
        {"name": "web", "protocol": "tcp", "dport": 80, "action": "accept"}]}}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_toggle_edit_is_planned_as_the_toggle(lab, env, tmp_path, backend):
    """A changed toggle value in the file is one plan item naming the toggle, on every backend (iptables
    planned '0 changes' and nft showed the toggle's marker rule as a rule of its own)."""
    ns = lab.netns("tog")
    args = ["-n", ns, *backend_args(backend)]
    ok(ctkit(env, "apply", write(tmp_path, "off", _toggle_policy(False)), *args))
    on = write(tmp_path, "on", _toggle_policy(True))

    def items() -> list[tuple]:
        plan = ok(ctkit(env, "plan", on, "--json", *args), 1)
        return [(i["kind"], i["action"], i["subject"], i["before"], i["after"]) for i in json.loads(plan.stdout)["items"]]

    assert [i[:5] for i in items()] == [("toggle", "change", "toggle maint", "off", "on")]
    ok(ctkit(env, "toggle", "maint", "on", *args))  # the live state is already what the file will say
    got = items()
    assert [i[:3] for i in got] == [("toggle", "change", "toggle maint")], got
    assert "policy off" in got[0][3] and "policy on" in got[0][4], got
    ok(ctkit(env, "apply", on, *args))
    ok(ctkit(env, "plan", on, *args), 0)


NOTHING = "nothing sent to the kernel"  # what a no-op apply says


def test_a_no_op_apply_trusts_only_ctkits_own_last_commit(lab, env, tmp_path):
    """nft: an apply of the document ctkit's last commit wrote, with no commit in the namespace since,
    skips listing the table (ctkit/backends/nft/written.py). Any commit since, by hand inside ctkit's
    table or elsewhere, and the table is read and compared again: a hand edit is still repaired."""
    ns = lab.netns("wr")
    policy = str(ROOT / "examples" / "server-baseline.json")
    ok(ctkit(env, "apply", policy, "-n", ns))
    records = list((tmp_path / "state").glob("*/nft-ctkit.written.json"))
    assert len(records) == 1, records
    assert NOTHING in ok(ctkit(env, "apply", policy, "-n", ns)).stdout
    run(ns, "nft", "add", "rule", "inet", "ctkit", "input", "tcp", "dport", "9", "drop")  # a hand edit
    out = ok(ctkit(env, "apply", policy, "-n", ns)).stdout
    assert NOTHING not in out, out
    assert "dport 9" not in run(ns, "nft", "list", "table", "inet", "ctkit").stdout
    run(ns, "nft", "add", "table", "ip", "other")  # a commit outside ctkit's table: read, found equal
    assert NOTHING in ok(ctkit(env, "apply", policy, "-n", ns)).stdout
    # a record that does not match the kernel's id (written by hand, or stale) is not trusted
    data = json.loads(records[0].read_text())
    records[0].write_text(json.dumps(dict(data, generation=data["generation"] + 1000)))
    run(ns, "nft", "add", "rule", "inet", "ctkit", "input", "tcp", "dport", "9", "drop")
    assert NOTHING not in ok(ctkit(env, "apply", policy, "-n", ns)).stdout
    assert "dport 9" not in run(ns, "nft", "list", "table", "inet", "ctkit").stdout


# ------------------------------------------------------------------ 4. run-time set members survive

RUNTIME = "192.0.2.77"


def set_members(ns: str, backend: str) -> dict[str, str | None]:
    """The kernel's members of the blocklist: value -> nft element comment (None: none; iptables: None)."""
    out: dict[str, str | None] = {}
    if backend == "nft":
        body = next(i["set"] for i in nft_json(ns, "list", "set", "inet", "ctkit", "blocklist") if "set" in i)
        for e in body.get("elem", []):
            comment = None
            if isinstance(e, dict) and "elem" in e:
                comment = e["elem"].get("comment")
                e = e["elem"]["val"]
            if isinstance(e, dict) and "prefix" in e:
                e = f"{e['prefix']['addr']}/{e['prefix']['len']}"
            out[str(e)] = comment
        return out
    listing = run(ns, "ipset", "list", "ctkit-blocklist").stdout
    members = listing.split("Members:\n", 1)[1]
    for line in members.split("\n"):
        if line.strip():
            out[line.split()[0]] = None
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_members_added_at_run_time_survive_applies(lab, env, tmp_path, backend):
    need_ipset(backend)
    ns = lab.netns("set")
    args = ["-n", ns, *backend_args(backend)]
    ok(ctkit(env, "apply", str(BLOCKLIST), *args))
    ok(ctkit(env, "set", "add", "blocklist", RUNTIME, "--timeout", "600", *args))
    declared = {"198.51.100.0/24", "203.0.113.7"}
    assert set(set_members(ns, backend)) == declared | {RUNTIME}

    ok(ctkit(env, "apply", str(BLOCKLIST), *args))  # the same policy again
    members = set_members(ns, backend)
    assert set(members) == declared | {RUNTIME}, members
    if backend == "nft":  # declared members carry the mark, the run-time one does not
        assert members == {"198.51.100.0/24": "policy", "203.0.113.7": "policy", RUNTIME: None}

    doc = json.loads(BLOCKLIST.read_text())
    elements = doc["sets"]["blocklist"]["elements"]
    elements.remove("198.51.100.0/24")
    elements.append("192.0.2.200")
    ok(ctkit(env, "apply", write(tmp_path, "blocklist-edited", doc), *args))
    members = set_members(ns, backend)
    assert set(members) == {"203.0.113.7", "192.0.2.200", RUNTIME}, members
    if backend == "nft":
        assert members["192.0.2.200"] == "policy" and members[RUNTIME] is None, members


# ------------------------------------------------------------------ bugs found by these tests

@pytest.mark.parametrize("backend", ["nft", "iptables-nft"])
def test_a_declared_member_deleted_at_run_time_comes_back_with_an_apply(lab, env, backend):
    """Both backends must mean the same: nft's apply adds the declared members that are missing
    (ctkit/backends/nft/diff.py), and so does iptables' (ipset.present reads the kept sets' members: it
    compared the policy with the declaration recorded at the last apply only), so after `ctkit set del` of
    a declared member an apply puts it back, and plan says so first."""
    need_ipset(backend)
    ns = lab.netns("del")
    args = ["-n", ns, *backend_args(backend)]
    ok(ctkit(env, "apply", str(BLOCKLIST), *args))
    ok(ctkit(env, "set", "del", "blocklist", "203.0.113.7", *args))
    assert set(set_members(ns, backend)) == {"198.51.100.0/24"}
    assert ctkit(env, "plan", str(BLOCKLIST), *args).returncode == 1  # pending: the member comes back
    ok(ctkit(env, "apply", str(BLOCKLIST), *args))
    assert set(set_members(ns, backend)) == {"198.51.100.0/24", "203.0.113.7"}
    assert ctkit(env, "plan", str(BLOCKLIST), *args).returncode == 0  # and then nothing is


def _attrs(buf: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, i)
        out[kind & 0x3FFF] = buf[i + 4:i + length]
        i += (length + 3) & ~3
    return out


def timeout_objects(ns: str, backend: str) -> list[dict]:
    """The kernel's conntrack timeout policies: nft's ct timeout objects, or the cttimeout objects behind
    iptables' CT --timeout (a netlink dump; the numbers are the kernel's, state number -> seconds)."""
    if backend == "nft":
        return [dict(i["ct timeout"]["policy"]) for i in nft_json(ns, "list", "table", "inet", "ctkit")
                if "ct timeout" in i]
    from ctkit.kernel import cttimeout
    out = []
    for answer in cttimeout._talk(ns, cttimeout.MSG_GET, "list timeouts", dump=True):
        data = _attrs(answer[cttimeout.CTA_TIMEOUT_DATA])
        states = {n: s for s, n in cttimeout.STATE_ATTR["udp"].items()}
        out.append({states[k]: struct.unpack(">I", v)[0] for k, v in data.items()})
    return out


@pytest.mark.parametrize("backend", ["nft", "iptables-nft"])
def test_a_changed_ct_timeout_policy_reaches_the_kernel(lab, env, tmp_path, backend):
    ns = lab.netns("ctt")
    args = ["-n", ns, *backend_args(backend)]
    doc = copy.deepcopy(EDIT_BASE)
    doc["timeouts"] = [{"name": "dns_udp", "protocol": "udp", "ports": [53], "policy": {"unreplied": 3, "replied": 5}}]
    ok(ctkit(env, "apply", write(tmp_path, "timeout-5", doc), *args))
    assert timeout_objects(ns, backend) and all(o["replied"] == 5 for o in timeout_objects(ns, backend))
    doc["timeouts"][0]["policy"]["replied"] = 9
    path = write(tmp_path, "timeout-9", doc)
    ok(ctkit(env, "plan", path, *args), 1)
    ok(ctkit(env, "apply", path, *args))
    objects = timeout_objects(ns, backend)
    assert objects and all(o["replied"] == 9 for o in objects), objects


def test_monitor_sees_a_real_change(lab, env, tmp_path):
    """The monitor used above is not blind: a policy change between its marks is announced."""
    ns = lab.netns("mon")
    ok(ctkit(env, "apply", str(BLOCKLIST), "-n", ns))
    doc = json.loads(BLOCKLIST.read_text())
    doc["sets"]["web_ports"]["elements"].append(8080)
    edited = write(tmp_path, "web-ports", doc)
    monitor = Monitor(ns).start()
    try:
        ok(ctkit(env, "apply", edited, "-n", ns))
    finally:
        seen = monitor.stop()
    assert any(line.startswith("add element inet ctkit web_ports") for line in seen), seen
    assert not any(line.startswith(("delete rule", "add rule", "delete table", "add table")) for line in seen), seen
