"""How an accept ends ctkit's evaluation on iptables: the reserved packet-mark bit and the chain behind it.

On nft an accept ends ctkit's base chain, wherever it is reached, and the packet goes on to the
other base chains at the hook. On iptables ctkit's top-level chain (CTKIT-INPUT, ...) is called from
the built-in chain, so its accept is `-j RETURN`: the built-in chain goes on after ctkit's jump. An
accept in a chain reached by a jump from there (a user chain, a toggle's chain) must leave every
chain up to the built-in one, which a RETURN alone does not: it sets ACCEPT_BIT and returns; each
caller tests the bit after its jump and returns too, and the top-level chain goes (-g) to
<PREFIX>ACCEPT-END, which clears the bit and, by ending, returns to the built-in chain. The top-level
chain clears the bit first, so a bit set before ctkit's chain cannot pass for an accept.

The generator (ctkit/backends/iptables/generate.py) writes these rules and the importer
(ctkit/importer/own.py) folds them back into the accepts they came from, so both read them here.
"""
from __future__ import annotations

#: the packet-mark bit ctkit's iptables chains reserve while a packet is in them (a policy that sets it is refused)
ACCEPT_BIT = 0x40000000
#: the chain (after the prefix) that clears the bit and returns to the built-in chain; the hyphen keeps it
#: out of the policy's chain names ([A-Za-z][A-Za-z0-9_]*)
ACCEPT_END = "ACCEPT-END"

_BIT = f"{ACCEPT_BIT:#x}/{ACCEPT_BIT:#x}"
#: the target of a nested accept's first rule (its matches and comment before it)
SET_BIT = f"-j MARK --set-xmark {_BIT}"
#: the match of the rules that test the bit (as iptables-save prints it)
TEST_BIT = f"-m mark --mark {_BIT}"
#: a whole rule: clears the bit (ACCEPT-END's rule, and the top-level chain's first)
CLEAR_BIT = f"-j MARK --set-xmark 0x0/{ACCEPT_BIT:#x}"
#: a whole rule: after a nested accept, and after a jump in a nested chain
RETURN_IF_SET = f"{TEST_BIT} -j RETURN"


def accept_end(prefix: str) -> str:
    """The name of the chain ACCEPT-END for chain prefix `prefix` (CTKIT- -> CTKIT-ACCEPT-END)."""
    return prefix + ACCEPT_END


def goto_end_if_set(prefix: str) -> str:
    """A whole rule of the top-level chain, after a jump to a chain that may have accepted."""
    return f"{TEST_BIT} -g {accept_end(prefix)}"
