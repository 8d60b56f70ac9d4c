"""Kernel tests: root and network namespaces. Each test builds its own lab and removes it."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# the helpers both suites use (tests/ptyrun.py: a command on a pseudo-terminal)
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from lab import CLIENT4, CLIENT6, CLIENT_LAN4, SERVER4, SERVER6, SERVER_LAN4, Lab  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") and any("integration" in str(item.fspath) for item in items):
        pytest.exit("CI must run the kernel tests as root: none of them would run", returncode=1)
    marker = pytest.mark.skip(reason="kernel tests need root (network namespaces)")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(marker)


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture
def pair(lab):
    """Two namespaces, client and server, on one veth link with v4 and v6 addresses."""
    server = lab.netns("srv")
    client = lab.netns("cli")
    lab.link(client, server,
             [f"{CLIENT4}/24", f"{CLIENT_LAN4}/24", f"{CLIENT6}/64"],
             [f"{SERVER4}/24", f"{SERVER_LAN4}/24", f"{SERVER6}/64"])
    return client, server
