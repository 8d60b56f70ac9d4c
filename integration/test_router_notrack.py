"""The router case (issue 13 §1): examples/router-notrack-transit.json untracks every packet not addressed
to the router (`daddr_type: {"not": "local"}`), on a real client - router - server lab, on every backend.

What the kernel must show: forwarded TCP and UDP flows, IPv4 and IPv6, pass and leave no conntrack entry
on the router; connections to the router and from it are tracked; the forward chain still filters (a port
it does not accept is dropped, untracked or not)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import (
    BACKENDS,
    LAN_ROUTER4,
    LAN_ROUTER6,
    LAN_SERVER4,
    LAN_SERVER6,
    WAN_CLIENT4,
    WAN_CLIENT6,
    WAN_ROUTER4,
    WAN_ROUTER6,
    backend_args,
    conntrack_list,
    router_lab,
    run,
    tcp_listen,
    tcp_probe,
    udp_exchange,
    udp_server,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "router-notrack-transit.json"
#: (family option of conntrack -L, client, router on the wan side, router on the lan side, server)
NETS = (("ipv4", WAN_CLIENT4, WAN_ROUTER4, LAN_ROUTER4, LAN_SERVER4),
        ("ipv6", WAN_CLIENT6, WAN_ROUTER6, LAN_ROUTER6, LAN_SERVER6))


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)


def entries(ns: str, family: str, *match: str) -> list[str]:
    """The router's conntrack entries matching these conntrack -L options."""
    return [line for line in conntrack_list(ns, "-f", family, *match).splitlines() if line.strip()]


@pytest.fixture
def routed(lab):
    net = router_lab(lab)
    # unlike the NAT lab, the client routes to the LAN through the router: transit without translation
    run(net.client, "ip", "route", "add", "10.1.0.0/24", "via", WAN_ROUTER4)
    run(net.client, "ip", "-6", "route", "add", "fd00:1::/64", "via", WAN_ROUTER6)
    return net


@pytest.mark.parametrize("backend", BACKENDS)
def test_forwarded_flows_are_untracked_and_the_routers_own_are_not(routed, backend):
    net = routed
    applied = ctkit("apply", str(EXAMPLE), "-n", net.router, *backend_args(backend))
    assert applied.returncode == 0, applied.stderr
    sockets = []
    try:
        for family, client, wan, lan, server in NETS:
            sockets += [tcp_listen(net.server, server, 80), tcp_listen(net.server, server, 23),
                        tcp_listen(net.router, wan, 22)]
            dns = udp_server(net.server, server, 53)
            sockets.append(dns)

            # transit: delivered both ways, and no entry on the router
            assert tcp_probe(net.client, server, 80, timeout=1.0) == "open", (backend, family)
            assert udp_exchange(net.client, dns, server, 53) == (True, True), (backend, family)
            assert entries(net.router, family, "-s", client, "-d", server) == [], (backend, family)

            # the forward chain still filters: port 23 is not accepted, so it is dropped (and not tracked)
            assert tcp_probe(net.client, server, 23, timeout=0.5) == "timeout", (backend, family)

            # to the router: tracked (the reply is accepted as established)
            assert tcp_probe(net.client, wan, 22, timeout=1.0) == "open", (backend, family)
            assert entries(net.router, family, "-s", client, "-d", wan, "-p", "tcp", "--dport", "22"), (backend, family)

            # from the router: tracked, and its reply (addressed to the router) too
            assert tcp_probe(net.router, server, 80, timeout=1.0) == "open", (backend, family)
            assert entries(net.router, family, "-s", lan, "-d", server, "-p", "tcp", "--dport", "80"), (backend, family)
    finally:
        for s in sockets:
            s.close()

    # the exemption counted the transit packets, and the audit finds the kernel as compiled
    audit = ctkit("audit", str(EXAMPLE), "-n", net.router, *backend_args(backend), "--json")
    assert audit.returncode in (0, 1), audit.stderr
    assert json.loads(audit.stdout)["drift"] == [], audit.stdout
