"""Throwaway lab topologies in network namespaces, for kernel tests.

Every namespace a Lab creates is removed when the Lab closes, even when the
test fails. Traffic helpers create their sockets inside a namespace (setns in
this thread, then the socket stays there) and bound every wait by a timeout.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as pr_netns

from ctkit.backends import registry
from ctkit.kernel.netns import entered

#: the backends every differential test runs on: nft, and iptables in both of its kernel variants
BACKENDS = ("nft", "iptables-nft", "iptables-legacy")


def backend_named(name: str):
    """A test backend name ("iptables-legacy") as the Backend object the registry gives."""
    kind, _, variant = name.partition("-")
    return registry.get(kind, variant or "auto")


def backend_args(name: str) -> list[str]:
    """The same backend as ctkit command-line options."""
    kind, _, variant = name.partition("-")
    return ["--backend", kind] + (["--iptables-variant", variant] if variant else [])

_counter = itertools.count()

# The lab addresses: documentation ranges plus 10/8 for the "from the LAN" rules
# of the examples. They exist only inside the namespaces a Lab creates.
SERVER4, CLIENT4 = "192.0.2.10", "192.0.2.20"
SERVER_LAN4, CLIENT_LAN4 = "10.0.0.10", "10.0.0.20"
SERVER6, CLIENT6 = "2001:db8::10", "2001:db8::20"


def unique(prefix: str = "ctk") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:4]}"


def run(ns: str | None, *argv: str, check: bool = True, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Lab:
    """A set of namespaces; use as a context manager."""

    prefix: str = "ctk"
    namespaces: list[str] = field(default_factory=list)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            try:
                pr_netns.remove(ns)
            except OSError:
                pass
        self.namespaces.clear()

    def netns(self, role: str = "ns") -> str:
        name = unique(f"{self.prefix}{role}")[:60]
        pr_netns.create(name)
        self.namespaces.append(name)
        with NetNS(name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with entered(name):
            # no DAD: IPv6 addresses usable at once; no RA noise
            with open("/proc/sys/net/ipv6/conf/default/accept_dad", "w") as f:
                f.write("0\n")
        return name

    def link(self, a: str, b: str, a_addrs: list[str], b_addrs: list[str], name: str = "veth0") -> None:
        """Connect namespaces a and b with a veth pair named `name` on both ends."""
        tmp_a, tmp_b = f"v{uuid.uuid4().hex[:8]}", f"v{uuid.uuid4().hex[:8]}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
            try:  # the pair exists in the host's namespace only until these two moves
                ipr.link("set", index=ipr.link_lookup(ifname=tmp_a)[0], net_ns_fd=a)
                ipr.link("set", index=ipr.link_lookup(ifname=tmp_b)[0], net_ns_fd=b)
            except Exception:
                for left in ipr.link_lookup(ifname=tmp_a) + ipr.link_lookup(ifname=tmp_b):
                    ipr.link("del", index=left)
                raise
        for ns, tmp, addrs in ((a, tmp_a, a_addrs), (b, tmp_b, b_addrs)):
            with NetNS(ns) as ipr:
                idx = ipr.link_lookup(ifname=tmp)[0]
                ipr.link("set", index=idx, ifname=name)
                for addr in addrs:
                    iface = ipaddress.ip_interface(addr)
                    kw = {"flags": 0x02} if iface.version == 6 else {}  # IFA_F_NODAD
                    ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw)
                ipr.link("set", index=idx, state="up")
        for ns in (a, b):
            _wait_up(ns, name)


def _wait_up(ns: str, name: str, within: float = 5.0) -> None:
    """Wait until the link is operationally up: the kernel turns a veth's carrier on in linkwatch, up to a
    second after both ends are set up, and until then its queue drops what is sent (a first SYN lost, and
    a 1 s connect timing out: test_lab failed one run in five)."""
    deadline = time.monotonic() + within
    with NetNS(ns) as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        while ipr.get_links(idx)[0].get_attr("IFLA_OPERSTATE") != "UP":
            if time.monotonic() > deadline:
                raise AssertionError(f"link {name} in {ns} is not up after {within} s")
            time.sleep(0.01)


# ------------------------------------------------------------------ traffic

def sock(ns: str, family: int, kind: int) -> socket.socket:
    with entered(ns):
        return socket.socket(family, kind)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_listen(ns: str, addr: str, port: int) -> socket.socket:
    s = sock(ns, _family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    return s


def tcp_connect(ns: str, addr: str, port: int, timeout: float = 1.0, src: str | None = None) -> bool:
    """True when the three-way handshake completes (a listener exists or the kernel answers)."""
    return tcp_probe(ns, addr, port, timeout=timeout, src=src) == "open"


def udp_server(ns: str, addr: str, port: int) -> socket.socket:
    s = sock(ns, _family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(1.0)
    return s


def udp_exchange(client_ns: str, server: socket.socket, addr: str, port: int, payload: bytes = b"ping",
                 timeout: float = 1.0, src: str | None = None, sport: int = 0) -> tuple[bool, bool]:
    """Send one datagram and echo it back: (request delivered, reply delivered)."""
    c = sock(client_ns, _family(addr), socket.SOCK_DGRAM)
    c.settimeout(timeout)
    try:
        if src or sport:
            c.bind((src or ("::" if ":" in addr else "0.0.0.0"), sport))
        c.sendto(payload, (addr, port))
        server.settimeout(timeout)
        try:
            data, peer = server.recvfrom(2048)
        except OSError:
            return False, False
        server.sendto(data, peer)
        try:
            c.recvfrom(2048)
            return True, True
        except OSError:
            return True, False
    finally:
        c.close()


def stop(proc: subprocess.Popen, grace: float = 5) -> None:
    """End a helper process (a monitor): SIGTERM, then SIGKILL when it has not exited within `grace` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


# ------------------------------------------------------------ kernel state

def write_proc(ns: str, path: str, value: str) -> None:
    """Write a /proc/sys value inside namespace `ns` (a per-namespace sysctl of a test's own namespace)."""
    with entered(ns):
        with open(path, "w") as f:
            f.write(value + "\n")


def conntrack_count(ns: str) -> int:
    with entered(ns):
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read())


def conntrack_list(ns: str, *args: str) -> str:
    return run(ns, "conntrack", "-L", *args, check=False).stdout


def nft_json(ns: str, *args: str) -> list[dict]:
    out = run(ns, "nft", "-j", *args).stdout
    return json.loads(out)["nftables"] if out.strip() else []


def rule_counters(ns: str, table: str = "ctkit") -> dict[str, int]:
    """Packets counted per rule comment, summed over the rules sharing a comment."""
    counts: dict[str, int] = {}
    for item in nft_json(ns, "list", "table", "inet", table):
        rule = item.get("rule")
        if not rule:
            continue
        packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        key = rule.get("comment", "")
        counts[key] = counts.get(key, 0) + packets
    return counts


# ------------------------------------------- probes for the differential matrix

def tcp_probe(ns: str, addr: str, port: int, timeout: float = 0.5, src: str | None = None) -> str:
    """'open' (handshake completed), 'refused' (RST came back) or 'timeout' (no answer)."""
    s = sock(ns, _family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect((addr, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"
    finally:
        s.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(ns: str, addr: str, src: str | None = None, timeout: float = 0.5) -> bool:
    """One ICMP / ICMPv6 echo request from `ns` to `addr`; True when the matching reply arrives."""
    import struct
    import time

    v6 = ":" in addr
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with entered(ns):
        s = socket.socket(_family(addr), socket.SOCK_RAW, proto)
    ident = uuid.uuid4().int & 0xFFFF
    req_type, rep_type = (128, 129) if v6 else (8, 0)
    body = b"ctkit-matrix"
    header = struct.pack("!BBHHH", req_type, 0, 0, ident, 1)
    packet = header if v6 else struct.pack("!BBHHH", req_type, 0, _checksum(header + body), ident, 1)
    try:
        if src:
            s.bind((src, 0))
        s.sendto(packet + body, (addr, 0))  # the kernel fills in the ICMPv6 checksum
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, _peer = s.recvfrom(2048)
            except OSError:
                return False
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]  # skip the IPv4 header
            if len(data) >= 8:
                typ, _code, _sum, rid, _seq = struct.unpack("!BBHHH", data[:8])
                if typ == rep_type and rid == ident:
                    return True
        return False
    finally:
        s.close()


def ftp_passive(client_ns: str, server_ns: str, addr: str, port: int = 21, data_port: int = 40021,
                timeout: float = 1.0, src: str | None = None) -> tuple[str, str]:
    """A minimal passive FTP exchange: (control, data), each 'open' | 'refused' | 'timeout'.

    The server answers PASV with a 227 reply naming `data_port`; the kernel's ftp
    helper, when assigned to the control connection, reads that reply and expects
    the client's data connection (ct state related). Only lab addresses, one
    connection each way, every wait bounded by `timeout`.
    """
    import threading

    control = tcp_listen(server_ns, addr, port)
    data = tcp_listen(server_ns, addr, data_port)
    control.settimeout(timeout)
    data.settimeout(timeout)
    h, lo = divmod(data_port, 256)
    pasv = "227 Entering Passive Mode (%s,%d,%d).\r\n" % (addr.replace(".", ","), h, lo)
    if ":" in addr:
        pasv = f"229 Entering Extended Passive Mode (|||{data_port}|).\r\n"

    def serve() -> None:
        try:
            conn, _ = control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(timeout)
            try:
                conn.sendall(b"220 ctkit lab ftp\r\n")
                if conn.recv(256).upper().startswith((b"PASV", b"EPSV")):
                    conn.sendall(pasv.encode())
                try:
                    d, _ = data.accept()
                    d.close()
                except OSError:
                    pass
                conn.recv(256)  # QUIT
                conn.sendall(b"221 bye\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    c = sock(client_ns, _family(addr), socket.SOCK_STREAM)
    c.settimeout(timeout)
    result = ("timeout", "timeout")
    try:
        if src:
            c.bind((src, 0))
        try:
            c.connect((addr, port))
        except ConnectionRefusedError:
            return ("refused", "timeout")
        except OSError:
            return result
        try:
            c.recv(256)
            c.sendall(b"EPSV\r\n" if ":" in addr else b"PASV\r\n")
            c.recv(256)
        except OSError:
            return ("open", "timeout")
        result = ("open", tcp_probe(client_ns, addr, data_port, timeout=timeout, src=src))
        try:
            c.sendall(b"QUIT\r\n")
            c.recv(256)
        except OSError:
            pass
        return result
    finally:
        c.close()
        thread.join(timeout * 4)
        control.close()
        data.close()


# ------------------------------------------------ three namespaces: a router lab

#: client (outside, on wan0) -- router -- server (inside, on lan0)
WAN_ROUTER4, WAN_CLIENT4 = "203.0.113.1", "203.0.113.20"
LAN_ROUTER4, LAN_SERVER4 = "10.1.0.1", "10.1.0.10"
WAN_ROUTER6, WAN_CLIENT6 = "2001:db8:f::1", "2001:db8:f::20"
LAN_ROUTER6, LAN_SERVER6 = "fd00:1::1", "fd00:1::10"


@dataclass(frozen=True)
class Routed:
    client: str  # outside: knows only the wan segment (no route to the LAN)
    router: str  # forwards between wan0 and lan0
    server: str  # inside: default route via the router


def router_lab(lab: Lab) -> Routed:
    """client --wan0-- router --lan0-- server, IPv4 and IPv6, forwarding on in the router only.

    The client has no route to the LAN, so it reaches the server only through
    port forwarding and answers the server only when its source is translated.
    """
    client, router, server = lab.netns("rcli"), lab.netns("rtr"), lab.netns("rsrv")
    lab.link(client, router, [f"{WAN_CLIENT4}/24", f"{WAN_CLIENT6}/64"],
             [f"{WAN_ROUTER4}/24", f"{WAN_ROUTER6}/64"], name="wan0")
    lab.link(router, server, [f"{LAN_ROUTER4}/24", f"{LAN_ROUTER6}/64"],
             [f"{LAN_SERVER4}/24", f"{LAN_SERVER6}/64"], name="lan0")
    with entered(router):
        for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
            with open(path, "w") as f:
                f.write("1\n")
    run(server, "ip", "route", "add", "default", "via", LAN_ROUTER4)
    run(server, "ip", "-6", "route", "add", "default", "via", LAN_ROUTER6)
    return Routed(client, router, server)


def tcp_session(ns: str, addr: str, port: int, timeout: float = 1.0, src: str | None = None) -> socket.socket | None:
    """An open TCP connection from `ns` (None when the handshake fails within timeout)."""
    s = sock(ns, _family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect((addr, port))
        return s
    except OSError:
        s.close()
        return None


def accept_peer(listener: socket.socket, timeout: float = 1.0) -> tuple[socket.socket, tuple] | None:
    """Accept one connection within timeout: (connection, peer address) or None."""
    listener.settimeout(timeout)
    try:
        conn, peer = listener.accept()
    except OSError:
        return None
    conn.settimeout(timeout)
    return conn, peer
