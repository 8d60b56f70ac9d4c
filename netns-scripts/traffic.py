"""DNS-like traffic between two lab namespaces, for the demo (bounded in count and time).

    python traffic.py dns CLIENT_NS SERVER_NS [--count N]   UDP and TCP exchanges with port 53
    python traffic.py tcp CLIENT_NS SERVER_NS PORT [--src ADDR]  one TCP exchange on PORT

Sockets are created inside each namespace (ctkit.kernel.netns.entered), then
used from this one process; every wait has a timeout.
"""
from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

from ctkit.kernel.netns import entered

SERVER4, SERVER6, SERVER_LAN4, CLIENT_LAN4 = "192.0.2.10", "2001:db8::10", "10.0.0.10", "10.0.0.20"
TIMEOUT = 1.0
DEADLINE = 30.0  # seconds, whatever the count


def _sock(ns: str, family: int, kind: int) -> socket.socket:
    with entered(ns):
        s = socket.socket(family, kind)
    s.settimeout(TIMEOUT)
    return s


def _query(n: int) -> bytes:
    # a DNS query for example.org, type A, id n
    return struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\x07example\x03org\x00\x00\x01\x00\x01"


def udp_round(cli: str, server: socket.socket, addr: str, n: int) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    c = _sock(cli, family, socket.SOCK_DGRAM)
    try:
        c.sendto(_query(n), (addr, 53))
        data, peer = server.recvfrom(512)
        server.sendto(data, peer)
        return c.recvfrom(512)[0] == data
    except OSError:
        return False
    finally:
        c.close()


def tcp_round(cli: str, listener: socket.socket, addr: str, port: int, payload: bytes,
              src: str | None = None) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    c = _sock(cli, family, socket.SOCK_STREAM)
    try:
        if src:
            c.bind((src, 0))
        c.connect((addr, port))
        c.sendall(payload)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            conn.sendall(conn.recv(512))
        return c.recv(512) == payload
    except OSError:
        return False
    finally:
        c.close()


def _listener(ns: str, addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = _sock(ns, family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    return s


def dns(cli: str, srv: str, count: int) -> int:
    start = time.monotonic()
    ok = {"udp": 0, "tcp": 0}
    servers = {}
    for addr in (SERVER4, SERVER6):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        u = _sock(srv, family, socket.SOCK_DGRAM)
        u.bind((addr, 53))
        servers[addr] = (u, _listener(srv, addr, 53))
    try:
        for n in range(count):
            if time.monotonic() - start > DEADLINE:
                break
            addr = SERVER4 if n % 2 == 0 else SERVER6
            u, t = servers[addr]
            ok["udp"] += udp_round(cli, u, addr, n)
            if n % 4 == 0:
                ok["tcp"] += tcp_round(cli, t, addr, 53, struct.pack("!H", 29) + _query(n))
    finally:
        for u, t in servers.values():
            u.close()
            t.close()
    tcp_sent = (count + 3) // 4
    print(f"DNS traffic: {ok['udp']}/{count} UDP queries answered, {ok['tcp']}/{tcp_sent} TCP queries answered "
          f"(IPv4 and IPv6) in {time.monotonic() - start:.2f}s")
    return 0 if ok["udp"] == count and ok["tcp"] == tcp_sent else 1


def tcp(cli: str, srv: str, port: int, src: str | None) -> int:
    listener = _listener(srv, SERVER_LAN4, port)
    try:
        ok = tcp_round(cli, listener, SERVER_LAN4, port, b"hello", src=src)
    finally:
        listener.close()
    print(f"TCP {src or 'client'} -> {SERVER_LAN4}:{port}: {'delivered' if ok else 'blocked'}")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["dns", "tcp"])
    ap.add_argument("client")
    ap.add_argument("server")
    ap.add_argument("port", nargs="?", type=int, default=22)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--src", default=CLIENT_LAN4)
    args = ap.parse_args(argv)
    if args.kind == "dns":
        return dns(args.client, args.server, min(args.count, 10000))
    return tcp(args.client, args.server, args.port, args.src)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
