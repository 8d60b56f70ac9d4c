"""Builder of the `chains` section: chains, their rules, and the statements rules carry
(log, limit, payload, signature, queue, dscp, mss)."""
from __future__ import annotations

from ctkit.netfilter import DSCP_CLASSES
from ctkit.policy.builder import Builder, addr_types, plain, protocols, ref
from ctkit.policy.checks import QUEUES
from ctkit.policy.model import Chain, Limit, Log, Payload, Queue, Rule, Signature


def build_chains(b: Builder, chains: dict) -> tuple[Chain, ...]:
    out = []
    for name, body in chains.items():
        cp = f"/chains/{name}"
        rules = tuple(build_rule(b, name, i, r) for i, r in enumerate(body.get("rules", [])))
        out.append(Chain(name=name, pointer=cp, policy=body.get("policy"), rules=rules, comment=body.get("comment")))
    return tuple(out)


def build_rule(b: Builder, chain: str, i: int, r: dict) -> Rule:
    p = f"/chains/{chain}/rules/{i}"
    log = r.get("log")
    return Rule(
        id=r.get("name", f"{chain}[{i}]"), pointer=p, chain=chain,
        protocols=protocols(r), family=r.get("family"),
        saddr=b.networks(plain(r.get("saddr")), p + "/saddr"),
        daddr=b.networks(plain(r.get("daddr")), p + "/daddr"),
        sport=b.ports(plain(r.get("sport")), p + "/sport"),
        dport=b.ports(plain(r.get("dport")), p + "/dport"),
        saddr_set=ref(r.get("saddr")), daddr_set=ref(r.get("daddr")),
        sport_set=ref(r.get("sport")), dport_set=ref(r.get("dport")),
        match_set=(r["match_set"]["name"], tuple(r["match_set"]["keys"])) if "match_set" in r else None,
        vmap=(r["vmap"]["key"], tuple(r["vmap"]["map"].items())) if "vmap" in r else None,
        iif=r.get("iif"), oif=r.get("oif"), ct_state=tuple(r.get("ct_state", ())),
        action=r.get("action"), reject_with=r.get("reject_with"),
        jump=r.get("jump"), goto=r.get("goto"), counter=r.get("counter", True),
        log=Log(log.get("prefix"), log.get("level", "warn"), _limit(log.get("limit"))) if log is not None else None,
        comment=r.get("comment"), length=b.lengths(r.get("length"), p + "/length"),
        payload=tuple(_payload(x) for x in r.get("payload", ())),
        signature=_signature(r.get("signature")), limit=_limit(r.get("limit")), when=r.get("when"),
        ct_mark_set=r.get("ct_mark_set"), ct_label_set=r.get("ct_label_set"),
        queue=_queue(b, r.get("queue"), p + "/queue"),
        mss=(0 if r["mss"] == "pmtu" else r["mss"]) if "mss" in r else None,
        dscp=DSCP_CLASSES.get(r["dscp"], r["dscp"]) if "dscp" in r else None,
        mark_set=r.get("mark_set"), connmark=r.get("connmark"), **addr_types(b, r, p))


def _limit(value: dict | None) -> Limit | None:
    if value is None:
        return None
    return Limit(value["rate"], value.get("per", "second"), value.get("burst", 5), value.get("by"))


def _payload(value: dict) -> Payload:
    mask = bytes.fromhex(value["mask"]) if "mask" in value else None
    return Payload(value["base"], value["offset"], bytes.fromhex(value["hex"]), mask)


def _signature(value: dict | None) -> Signature | None:
    if value is None:
        return None
    return Signature(bytes.fromhex(value["hex"]), value.get("algo", "bm"), value.get("from", 0),
                     value.get("to", 65535))


def _queue(b: Builder, value: dict | None, pointer: str) -> Queue | None:
    if value is None:
        return None
    num = value["num"]
    if isinstance(num, str):
        queues = b.range(num, pointer + "/num", QUEUES)
        if queues is None:
            return None
        lo, hi = queues.lo, queues.hi
    else:
        lo = hi = num
    return Queue(lo, hi, value.get("bypass", False), value.get("fanout", False))
