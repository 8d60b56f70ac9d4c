"""Every name ctkit writes into the kernel, and its parser: one format/parse pair each.

ctkit finds its own state again by these names (docs/ARCHITECTURE.md, "Ownership"),
so the format and the parse of each live side by side here and nowhere else.
Both backends, ownership.py and the audit import them.
"""
from __future__ import annotations

import base64
import hashlib

# ------------------------------------------------------------ rule comments
# Every kernel rule carries the id of the policy rule it came from, then the user's text:
# "input/2: ssh from the office". Counters and drift are mapped back through it.


def rule_comment(rule_id: str, comment: str | None) -> str:
    return f"{rule_id}: {comment}" if comment else rule_id


def rule_id(comment: str | None, known: set[str] | None = None) -> str | None:
    """The policy rule id in a kernel rule's comment; None when absent (or not in `known`)."""
    if not comment:
        return None
    rid = comment.split(": ", 1)[0]
    return rid if known is None or rid in known else None


# ------------------------------------------------------------------ toggles
# Each backend keeps a toggle's policy-file value in a marker comment:
# "toggle/NAME: policy on|off"; the iptables switch rule says "toggle/NAME".

TOGGLE_PREFIX = "toggle/"


def toggle_comment(name: str, policy_on: bool) -> str:
    return f"{TOGGLE_PREFIX}{name}: policy {'on' if policy_on else 'off'}"


def toggle_switch_comment(name: str) -> str:
    return f"{TOGGLE_PREFIX}{name}"


def parse_toggle_comment(comment: str) -> tuple[str, bool | None] | None:
    """(toggle name, the policy file's value or None) from a marker comment; None if it is none."""
    if not comment.startswith(TOGGLE_PREFIX):
        return None
    name, _, value = comment[len(TOGGLE_PREFIX):].partition(": policy ")
    return name, {"on": True, "off": False}.get(value)


def toggle_marker_in(spec: str, name: str) -> bool | None:
    """The policy value of toggle `name` if an iptables rule spec carries its marker, else None."""
    marker = f"{TOGGLE_PREFIX}{name}: policy "
    if marker not in spec:
        return None
    return spec.split(marker, 1)[1].startswith("on")


# --------------------------------------------------------------------- nft
#: unhooked chain holding one marker rule per toggle (policy chain names have no "-")
NFT_TOGGLE_CHAIN = "toggle-state"


def nft_toggle_set(name: str) -> str:
    """The set behind toggle `name`: {ipv4, ipv6} when on, empty when off."""
    return f"toggle_{name}"


#: the comment on a set element the policy file declares; members added at run time (`ctkit set add`,
#: fail2ban) have none, so an apply changes the declared ones and leaves the others alone
NFT_DECLARED_ELEMENT = "policy"


# ---------------------------------------------------------------- iptables

def chain_prefix(table: str) -> str:
    """The prefix of every chain ctkit owns for policy table `table`: ctkit -> CTKIT-."""
    return table.upper() + "-"


def ipset_name(prefix: str, name: str) -> str:
    """The ipset behind policy set `name`: <table>-<name> (ctkit-blocklist)."""
    return prefix.lower() + name


SWITCH = "TG-"
BODY = "TR-"


def toggle_chain_names(prefix: str, name: str, k: int) -> tuple[str, str]:
    """(switch chain, rule chain) of the k-th rule guarded by toggle `name`."""
    return f"{prefix}{SWITCH}{name}-{k}", f"{prefix}{BODY}{name}-{k}"


def parse_switch_chain(prefix: str, chain: str) -> tuple[str, int] | None:
    """(toggle, k) of a switch chain name <prefix>TG-<toggle>-<k>; None for any other chain."""
    head = prefix + SWITCH
    if not chain.startswith(head):
        return None
    toggle, _, k = chain[len(head):].rpartition("-")
    return (toggle, int(k)) if toggle and k.isdigit() else None


def is_switch_chain(prefix: str, chain: str) -> bool:
    return chain.startswith(prefix + SWITCH)


def body_of_switch(prefix: str, switch: str) -> str:
    return prefix + BODY + switch[len(prefix + SWITCH):]


def timeout_name(table: str, name: str, family: str) -> str:
    """The name of a cttimeout object: one per layer-3 protocol, in a namespace-wide space.

    Four characters: iptables-save (1.8.9 on Linux 6.18, both variants) prints only the
    first four characters of `-j CT --timeout NAME`, so a longer name would never read
    back as written. "k" and three characters of a hash of <table>-<name>-<family>;
    the kernel stage deletes only names that ctkit's own chains used.
    """
    digest = hashlib.sha1(f"{table}-{name}-{family}".encode()).digest()
    return "k" + base64.b32encode(digest).decode()[:3].lower()

