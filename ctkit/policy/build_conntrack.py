"""Builders of the conntrack sections: host settings (`conntrack`), `notrack`, `helpers`,
`timeouts` and `zones`."""
from __future__ import annotations

from ctkit.netfilter import TIMEOUT_STATES
from ctkit.policy.builder import Builder, addr_types, protocols
from ctkit.policy.model import HELPER_KERNEL_NAMES, Helper, Notrack, Setting, Timeout, Zone
from ctkit.terminal import excerpt

#: policy conntrack keys -> sysctl name under net.netfilter
SETTING_SYSCTLS: dict[str, str] = {
    "max": "nf_conntrack_max",
    "buckets": "nf_conntrack_buckets",
    "expect_max": "nf_conntrack_expect_max",
    "helper_autoassign": "nf_conntrack_helper",
    "tcp_loose": "nf_conntrack_tcp_loose",
    "tcp_be_liberal": "nf_conntrack_tcp_be_liberal",
    "acct": "nf_conntrack_acct",
    "timestamp": "nf_conntrack_timestamp",
    "events": "nf_conntrack_events",
}
#: policy conntrack timeouts keys -> sysctl name (the sysctls' TCP state names, not nft's)
TIMEOUT_SYSCTLS: dict[str, str] = {
    "generic": "nf_conntrack_generic_timeout",
    "icmp": "nf_conntrack_icmp_timeout",
    "icmpv6": "nf_conntrack_icmpv6_timeout",
    "udp": "nf_conntrack_udp_timeout",
    "udp_stream": "nf_conntrack_udp_timeout_stream",
    **{f"tcp_{s}": f"nf_conntrack_tcp_timeout_{s}" for s in (
        "syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack",
        "time_wait", "close", "max_retrans", "unacknowledged")},
}


def build_settings(ct: dict) -> tuple[Setting, ...]:
    """`conntrack`: one Setting per sysctl the policy gives, in SETTING_SYSCTLS then TIMEOUT_SYSCTLS order."""
    settings = [Setting(key, sysctl, int(ct[key]), f"/conntrack/{key}")
                for key, sysctl in SETTING_SYSCTLS.items() if key in ct]
    timeouts = ct.get("timeouts", {})
    settings += [Setting(f"timeouts.{key}", sysctl, int(timeouts[key]), f"/conntrack/timeouts/{key}")
                 for key, sysctl in TIMEOUT_SYSCTLS.items() if key in timeouts]
    return tuple(settings)


def build_notrack(b: Builder, items: list) -> tuple[Notrack, ...]:
    out = []
    for i, item in enumerate(items):
        p = f"/notrack/{i}"
        out.append(Notrack(
            name=item["name"], pointer=p, protocols=protocols(item),
            ports=b.ports(item.get("ports"), p + "/ports"),
            peers=b.networks(item.get("peers"), p + "/peers"),
            saddr=b.networks(item.get("saddr"), p + "/saddr"),
            daddr=b.networks(item.get("daddr"), p + "/daddr"),
            iif=item.get("iif"), oif=item.get("oif"),
            direction=item.get("direction", "both"), family=item.get("family"),
            counter=item.get("counter", True), comment=item.get("comment"), **addr_types(b, item, p)))
    return tuple(out)


def build_helpers(b: Builder, items: list) -> tuple[Helper, ...]:
    out = []
    for i, item in enumerate(items):
        p = f"/helpers/{i}"
        if item["protocol"] not in HELPER_KERNEL_NAMES[item["helper"]]:
            valid = ", ".join(HELPER_KERNEL_NAMES[item["helper"]])
            b.problem(p + "/protocol", f"helper {item['helper']!r} does not work over {item['protocol']}",
                      f"valid: {valid}")
            continue
        out.append(Helper(
            name=item["name"], helper=item["helper"], protocol=item["protocol"],
            ports=b.ports(item["ports"], p + "/ports"), pointer=p,
            saddr=b.networks(item.get("saddr"), p + "/saddr"),
            daddr=b.networks(item.get("daddr"), p + "/daddr"),
            direction=item.get("direction", "in"), family=item.get("family"),
            comment=item.get("comment"), **addr_types(b, item, p)))
    return tuple(out)


def build_timeouts(b: Builder, items: list) -> tuple[Timeout, ...]:
    out = []
    for i, t in enumerate(items):
        p = f"/timeouts/{i}"
        states = TIMEOUT_STATES[t["protocol"]]
        for key in t["policy"]:
            if key not in states:
                b.problem(f"{p}/policy/{key}", f"{excerpt(key)} is not a {t['protocol']} state", "valid: " + ", ".join(states))
        out.append(Timeout(
            name=t["name"], pointer=p, protocol=t["protocol"],
            policy=tuple((k, int(t["policy"][k])) for k in states if k in t["policy"]),
            ports=b.ports(t.get("ports"), p + "/ports"), saddr=b.networks(t.get("saddr"), p + "/saddr"),
            daddr=b.networks(t.get("daddr"), p + "/daddr"), direction=t.get("direction", "in"),
            family=t.get("family"), comment=t.get("comment"), **addr_types(b, t, p)))
    return tuple(out)


def build_zones(b: Builder, items: list) -> tuple[Zone, ...]:
    out = []
    for i, z in enumerate(items):
        p = f"/zones/{i}"
        out.append(Zone(
            name=z["name"], pointer=p, zone=z["zone"], zone_direction=z.get("zone_direction", "both"),
            protocols=protocols(z), ports=b.ports(z.get("ports"), p + "/ports"),
            saddr=b.networks(z.get("saddr"), p + "/saddr"), daddr=b.networks(z.get("daddr"), p + "/daddr"),
            iif=z.get("iif"), oif=z.get("oif"), direction=z.get("direction", "in"), family=z.get("family"),
            comment=z.get("comment"), **addr_types(b, z, p)))
    return tuple(out)
