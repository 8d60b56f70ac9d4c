"""Every name ctkit writes into the kernel, and its parser: one format/parse pair each.

ctkit finds its own state again by these names (docs/ARCHITECTURE.md, "Ownership"),
so the format and the parse of each live side by side here and nowhere else.
Both backends, ownership.py and the audit import them.
"""
from __future__ import annotations

import base64
import hashlib
import re

from ctkit.errors import UsageError
from ctkit.ownership import check_table

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
#: the policy schema's toggle names; a name from a command line (`ctkit toggle NAME`) is checked
#: against it before it becomes part of a set name, a chain name or a comment
_TOGGLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,11}", re.ASCII)


def check_toggle_name(name: str) -> str:
    if not isinstance(name, str) or not _TOGGLE_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a toggle name: a-z, 0-9 and _, starting with a letter, "
                         "at most 12 characters")
    return name


def toggle_comment(name: str, policy_on: bool) -> str:
    return f"{TOGGLE_PREFIX}{check_toggle_name(name)}: policy {'on' if policy_on else 'off'}"


def toggle_switch_comment(name: str) -> str:
    return f"{TOGGLE_PREFIX}{check_toggle_name(name)}"


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


#: what the name of a toggle's set starts with (a policy's own sets are named by the policy)
NFT_TOGGLE_SET_PREFIX = "toggle_"


def nft_toggle_set(name: str) -> str:
    """The set behind toggle `name`: {ipv4, ipv6} when on, empty when off."""
    return f"{NFT_TOGGLE_SET_PREFIX}{check_toggle_name(name)}"


#: the comment on a set element the policy file declares; members added at run time (`ctkit set add`,
#: fail2ban) have none, so an apply changes the declared ones and leaves the others alone
NFT_DECLARED_ELEMENT = "policy"


# ---------------------------------------------------------------- iptables

def chain_prefix(table: str) -> str:
    """The prefix of every chain ctkit owns for policy table `table`: ctkit -> CTKIT-.

    The table is checked first: upper() maps some non-ASCII letters to ASCII ones ("ctkıt", with a
    dotless i, to CTKIT; "ctkitſ", a long s, to CTKITS), and the prefix it gives would pass
    ownership.check_prefix for a name that ownership.check_table refuses."""
    return check_table(table).upper() + "-"


def ipset_name(prefix: str, name: str) -> str:
    """The ipset behind policy set `name`: <table>-<name> (ctkit-blocklist)."""
    return prefix.lower() + name


SWITCH = "TG-"
BODY = "TR-"


def toggle_chain_names(prefix: str, name: str, k: int) -> tuple[str, str]:
    """(switch chain, rule chain) of the k-th rule guarded by toggle `name`."""
    check_toggle_name(name)
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

