"""What ctkit may own: tables and chains whose names start with `ctkit` (CTKIT- on iptables).

Ownership by name is what lets ctkit replace and remove its own state without
reading anyone else's; so the names it may take are restricted, and every
kernel operation that deletes or replaces checks them again. A table called
`docker`, `firewalld` or `kube` can never be ctkit's, whatever a policy or a
command line says.
"""
from __future__ import annotations

import re

from ctkit.errors import UsageError

#: kept equal to the schema's pattern for `table` (a test checks it)
TABLE_PATTERN = r"^ctkit[A-Za-z0-9_]{0,11}$"
_TABLE = re.compile(TABLE_PATTERN, re.ASCII)
#: the iptables chain prefix of table `ctkit` (its upper-case name and a dash)
_PREFIX = re.compile(r"^CTKIT[A-Z0-9_]{0,11}-$", re.ASCII)


def check_table(name: str) -> str:
    if not isinstance(name, str) or not name.isascii() or not _TABLE.fullmatch(name):
        raise UsageError(f"{name!r} cannot be ctkit's table: names start with 'ctkit' (e.g. ctkit, ctkit_lab), "
                         "so ctkit never touches another owner's table or chains")
    return name


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.isascii() or not _PREFIX.fullmatch(prefix):
        raise UsageError(f"{prefix!r} cannot be ctkit's chain prefix: it must start with CTKIT and end with '-'")
    return prefix
