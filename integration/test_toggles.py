"""Runtime toggles on real packets, for every backend: `ctkit toggle` flips a group of
rules in one small kernel update, `ctkit show` reports the state, and a re-apply keeps
the live state unless the policy file changed the toggle's value."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lab import SERVER4, SERVER6, backend_args, tcp_listen, tcp_probe
from test_differential import BACKENDS, make_pair

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "maintenance-toggle.json"


def ctkit(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def web(client: str, server: str) -> tuple[str, str]:
    """(IPv4, IPv6) outcome of a connection to port 80."""
    out = []
    for addr in (SERVER4, SERVER6):
        listener = tcp_listen(server, addr, 80)
        try:
            out.append(tcp_probe(client, addr, 80, timeout=0.5))
        finally:
            listener.close()
    return tuple(out)


def state(server: str, backend: str) -> dict:
    data = json.loads(ctkit("show", "--netns", server, "--json", *backend_args(backend)))
    return data["toggles"]["maintenance"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_toggle_flips_and_survives_reapply(lab, tmp_path, backend):
    client, server = make_pair(lab)
    args = ["--netns", server, *backend_args(backend)]
    ctkit("apply", str(POLICY), *args)
    assert web(client, server) == ("open", "open")
    assert state(server, backend) == {"on": False, "policy": False}

    ctkit("toggle", "maintenance", "on", *args)
    assert web(client, server) == ("refused", "refused")  # tcp reset: closed for maintenance
    assert state(server, backend) == {"on": True, "policy": False}
    assert "toggle maintenance: on (policy file: off)" in ctkit("show", *args)

    # the same file again: the live state stays
    ctkit("apply", str(POLICY), *args)
    assert web(client, server) == ("refused", "refused")

    ctkit("toggle", "maintenance", "off", *args)
    assert web(client, server) == ("open", "open")

    # the file changes the value: the file wins, and is remembered
    doc = json.loads(POLICY.read_text())
    doc["toggles"]["maintenance"] = True
    changed = tmp_path / "maintenance-on.json"
    changed.write_text(json.dumps(doc))
    ctkit("apply", str(changed), *args)
    assert web(client, server) == ("refused", "refused")
    assert state(server, backend) == {"on": True, "policy": True}
    ctkit("toggle", "maintenance", "off", *args)
    ctkit("apply", str(changed), *args)  # unchanged file: stays off
    assert web(client, server) == ("open", "open")
    ctkit("apply", str(POLICY), *args)  # changed back to false: off, as the file says
    assert state(server, backend) == {"on": False, "policy": False}


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_toggle_is_a_usage_error(lab, backend):
    _client, server = make_pair(lab)
    ctkit("apply", str(POLICY), "--netns", server, *backend_args(backend))
    proc = subprocess.run([sys.executable, "-m", "ctkit", "toggle", "maintenanse", "on", "--netns", server,
                           *backend_args(backend)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no toggle 'maintenanse'" in proc.stderr
