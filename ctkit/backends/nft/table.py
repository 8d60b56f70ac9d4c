"""What ctkit's nft table is, without the IR: its family, the backend's name, and the commands that switch
a toggle's set. `ctkit set add|del` and `ctkit toggle` need only these; they start without the IR and the
generator (issue 12: start-up), which import them from here."""
from __future__ import annotations

from ctkit import names as kname

BACKEND = "nft"
FAMILY = "inet"  # ctkit owns one inet table: IPv4 and IPv6 in one place
#: a toggle's set holds both families while it is on (a rule's `meta nfproto @toggle` then matches)
TOGGLE_ON = ["ipv4", "ipv6"]


def toggle_element_commands(table: str, name: str, on: bool) -> list[dict]:
    """Set toggle `name` to `on`: the whole kernel update of `ctkit toggle` (and of apply)."""
    ident = {"family": FAMILY, "table": table, "name": kname.nft_toggle_set(name)}
    cmds: list[dict] = [{"flush": {"set": dict(ident)}}]
    if on:
        cmds.append({"add": {"element": dict(ident, elem=list(TOGGLE_ON))}})
    return cmds
