"""Where each IR chain lands on iptables: which table and built-in chain, under which name.

An IR base chain becomes ctkit's chain in the iptables table its hook and priority call for
(raw, mangle, nat, filter), named <PREFIX><BUILT-IN> and reached by one jump from the built-in
chain; IR base chains at the same place share that chain. A user chain becomes <PREFIX><name>
in every table a base chain reaches it from. See generate.py's docstring for the whole mapping.
"""
from __future__ import annotations

from ctkit import names as kname
from ctkit.backends.iptables.document import BACKEND
from ctkit.compile import ir
from ctkit.errors import CompileError

MAX_CHAIN_NAME = 28  # iptables: "chain name too long (must be under 29 chars)"
#: the built-in chains of each iptables table
_BUILTINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}


def placement(chain: ir.Chain) -> tuple[str, str]:
    """(iptables table, built-in chain) for an IR base chain."""
    hook = chain.hook
    assert hook is not None
    sets_template = any(isinstance(s, (ir.Notrack, ir.SetCtHelper, ir.SetCtTimeout, ir.SetCtZone))
                        for r in chain.rules for s in r.statements)
    builtin = hook.hook.upper()
    if hook.type == "nat":
        table = "nat"
    elif hook.type != "filter":
        raise CompileError(BACKEND, f"{hook.type} chain", chain.origin or chain.name, "no iptables table for it")
    elif sets_template or hook.priority <= ir.PRIORITY_RAW:
        table = "raw"
    elif hook.hook in ("input", "forward", "output"):
        table = "filter"
    else:
        table = "mangle"
    if builtin not in _BUILTINS[table]:
        raise CompileError(BACKEND, f"{hook.hook} hook", chain.origin or chain.name,
                           f"the {table} table has no {builtin} chain")
    return table, builtin


def check_name(name: str, where: str) -> str:
    if len(name) > MAX_CHAIN_NAME:
        raise CompileError(BACKEND, "chain name", where,
                           f"{name!r} is {len(name)} characters; iptables allows {MAX_CHAIN_NAME}: "
                           "shorten the policy's table or the chain's name")
    return name


def layout(table: ir.Table) -> tuple[dict[str, str], dict[tuple[str, str], list[ir.Chain]], dict[str, list[str]]]:
    """Names of ctkit's chains, the IR base chains behind each built-in chain, and
    the iptables tables each user-defined chain must exist in."""
    prefix = kname.chain_prefix(table.name)
    by_name = {c.name: c for c in table.chains}
    groups: dict[tuple[str, str], list[ir.Chain]] = {}
    for c in table.chains:
        if c.hook is not None:
            groups.setdefault(placement(c), []).append(c)
    names: dict[str, str] = {}
    owner: dict[tuple[str, str], str] = {}  # (iptables table, chain) -> IR chain
    for (tbl, builtin), members in groups.items():
        for c in members[:-1]:  # merged chains must fall through to the next one
            if c.policy == "drop" or any(isinstance(s, ir.Verdict) and s.kind in ("return", "goto")
                                         for r in c.rules for s in r.statements):
                raise CompileError(BACKEND, "chain", c.origin or c.name,
                                   f"{c.name} shares {tbl} {builtin} with {members[-1].name} and cannot end early")
        for c in members:
            names[c.name] = prefix + builtin
        owner[(tbl, prefix + builtin)] = members[0].name
    user_tables: dict[str, list[str]] = {}
    for (tbl, _builtin), members in groups.items():
        for c in members:
            for target in sorted(ir.reachable(c.name, by_name)):
                tbls = user_tables.setdefault(target, [])
                if by_name[target].hook is None and tbl not in tbls:
                    tbls.append(tbl)
    for c in table.chains:
        if c.hook is not None:
            continue
        names[c.name] = check_name(prefix + c.name, c.origin or c.name)
        if not user_tables.get(c.name):
            user_tables[c.name] = ["filter"]  # never reached: kept beside the filter chains
        for tbl in user_tables[c.name]:
            other = owner.setdefault((tbl, names[c.name]), c.name)
            if other != c.name:
                raise CompileError(BACKEND, "chain name", c.origin or c.name,
                                   f"{names[c.name]} is also the chain ctkit uses for {other}; rename {c.name!r}")
    return names, groups, user_tables
