"""The Ansible collection's tests: real ansible-playbook runs against network namespaces as hosts (root)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    mine = [i for i in items if "ansible/tests" in str(i.fspath)]
    if os.environ.get("CI") and mine:
        pytest.exit("CI must run the Ansible tests as root: none of them would run", returncode=1)
    for item in mine:
        item.add_marker(pytest.mark.skip(reason="the Ansible tests need root (network namespaces)"))
