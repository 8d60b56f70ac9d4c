"""A policy `prerouting` chain sees the address a packet arrived with, before destination NAT, on every
backend (issue 13, part 2): iptables has no filter PREROUTING and puts it in mangle, which runs before
the nat table; nft ran it at filter priority, after DNAT, so the same rule matched the translated address
there. Now both run at mangle priority (-150). A port-forwarded connection through a real router
namespace counts on the rule for the original address and not on the one for the translated address."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from lab import BACKENDS, LAN_SERVER4, WAN_ROUTER4, backend_args, router_lab, tcp_listen, tcp_probe

POLICY = {
    "version": 1,
    "nat": [{"name": "web-forward", "type": "dnat", "iif": "wan0", "protocol": "tcp", "dport": 8080,
             "to_addr": LAN_SERVER4, "to_port": 80}],
    "chains": {"prerouting": {"policy": "accept", "rules": [
        {"name": "original", "daddr": WAN_ROUTER4, "protocol": "tcp", "dport": 8080, "action": "accept"},
        {"name": "translated", "daddr": LAN_SERVER4, "protocol": "tcp", "dport": 80, "action": "accept"}]}},
}


def ctkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prerouting_sees_the_original_destination(lab, tmp_path, backend):
    net = router_lab(lab)
    policy = tmp_path / "fwd.json"
    policy.write_text(json.dumps(POLICY))
    args = ["-n", net.router, *backend_args(backend)]
    r = ctkit("apply", str(policy), *args)
    assert r.returncode == 0, r.stderr
    listener = tcp_listen(net.server, LAN_SERVER4, 80)
    try:
        assert tcp_probe(net.client, WAN_ROUTER4, 8080, timeout=1.0) == "open"  # forwarded through DNAT
    finally:
        listener.close()
    shown = ctkit("show", *args, "--json")
    assert shown.returncode == 0, shown.stderr
    packets = {r["id"]: r["packets"] for r in json.loads(shown.stdout)["rules"]}
    assert packets["original"] > 0 and packets["translated"] == 0, packets
