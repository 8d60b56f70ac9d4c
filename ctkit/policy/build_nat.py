"""Builder of the `nat` section."""
from __future__ import annotations

from ctkit.policy.builder import Builder, addr_types, protocols
from ctkit.policy.checks import check_nat_address, parse_nat_address
from ctkit.policy.model import Nat


def build_nat(b: Builder, items: list) -> tuple[Nat, ...]:
    out = []
    for i, r in enumerate(items):
        p = f"/nat/{i}"
        bad = check_nat_address(r["to_addr"]) if "to_addr" in r else None
        if bad:
            b.problem(p + "/to_addr", *bad)
        to_port = b.ports(r.get("to_port"), p + "/to_port")
        out.append(Nat(
            id="nat/" + r["name"] if "name" in r else f"nat[{i}]", pointer=p, type=r["type"], protocols=protocols(r),
            family=r.get("family"),
            saddr=b.networks(r.get("saddr"), p + "/saddr"), daddr=b.networks(r.get("daddr"), p + "/daddr"),
            sport=b.ports(r.get("sport"), p + "/sport"), dport=b.ports(r.get("dport"), p + "/dport"),
            iif=r.get("iif"), oif=r.get("oif"),
            to_addr=parse_nat_address(r["to_addr"]) if "to_addr" in r and not bad else None,
            to_port=to_port[0] if to_port else None,
            counter=r.get("counter", True), comment=r.get("comment"), **addr_types(b, r, p)))
    return tuple(out)
