"""The scope table of net.netfilter sysctls, KEY=VALUE parsing, and all-or-nothing `sysctl set`.

Nothing here touches /proc/sys: the sysctl directory is a temporary one (sysctl.BASE).
"""
from __future__ import annotations

import os

import pytest

from ctkit.errors import KernelError, UsageError
from ctkit.kernel import sysctl

# Every name under /proc/sys/net/netfilter on a Linux 6.18 machine (files; nf_log is a directory).
LINUX_6_18 = """nf_conntrack_acct nf_conntrack_buckets nf_conntrack_checksum nf_conntrack_count
nf_conntrack_events nf_conntrack_expect_max nf_conntrack_frag6_high_thresh nf_conntrack_frag6_low_thresh
nf_conntrack_frag6_timeout nf_conntrack_generic_timeout nf_conntrack_gre_timeout
nf_conntrack_gre_timeout_stream nf_conntrack_icmp_timeout nf_conntrack_icmpv6_timeout
nf_conntrack_log_invalid nf_conntrack_max nf_conntrack_sctp_timeout_closed
nf_conntrack_sctp_timeout_cookie_echoed nf_conntrack_sctp_timeout_cookie_wait
nf_conntrack_sctp_timeout_established nf_conntrack_sctp_timeout_heartbeat_sent
nf_conntrack_sctp_timeout_shutdown_ack_sent nf_conntrack_sctp_timeout_shutdown_recd
nf_conntrack_sctp_timeout_shutdown_sent nf_conntrack_tcp_be_liberal nf_conntrack_tcp_ignore_invalid_rst
nf_conntrack_tcp_loose nf_conntrack_tcp_max_retrans nf_conntrack_tcp_timeout_close
nf_conntrack_tcp_timeout_close_wait nf_conntrack_tcp_timeout_established nf_conntrack_tcp_timeout_fin_wait
nf_conntrack_tcp_timeout_last_ack nf_conntrack_tcp_timeout_max_retrans nf_conntrack_tcp_timeout_syn_recv
nf_conntrack_tcp_timeout_syn_sent nf_conntrack_tcp_timeout_time_wait
nf_conntrack_tcp_timeout_unacknowledged nf_conntrack_timestamp nf_conntrack_udp_timeout
nf_conntrack_udp_timeout_stream nf_hooks_lwtunnel nf_log_all_netns""".split()


def test_every_name_of_linux_6_18_is_classified():
    unclassified = [n for n in LINUX_6_18 if n not in sysctl.PER_NAMESPACE and n not in sysctl.HOST_WIDE]
    assert unclassified == []
    assert not sysctl.PER_NAMESPACE & sysctl.HOST_WIDE


@pytest.mark.parametrize("name", ["nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max",
                                  "nf_hooks_lwtunnel", "nf_log_all_netns"])
def test_host_wide(name):
    assert sysctl.scope(name) == "host" and not sysctl.is_per_namespace(name)


@pytest.mark.parametrize("name", ["nf_conntrack_tcp_loose", "nf_conntrack_udp_timeout", "nf_conntrack_count",
                                  "nf_conntrack_acct", "nf_conntrack_frag6_timeout", "nf_conntrack_helper"])
def test_per_namespace(name):
    assert sysctl.scope(name) == "namespace"


def test_unknown_names_are_host_wide():
    assert sysctl.scope("nf_conntrack_something_new") == "host"
    assert sysctl.scope("nf_new_global_switch") == "host"


def test_initial_namespace_is_detected_per_thread(monkeypatch):
    ids = {"/proc/thread-self/ns/net": (4, 100), "/proc/1/ns/net": (4, 100)}

    def ns_id(path):
        if path not in ids:
            raise PermissionError(13, "Permission denied", path)
        return ids[path]
    monkeypatch.setattr(sysctl, "_ns_id", ns_id)
    assert sysctl.in_initial_netns() is True
    ids["/proc/thread-self/ns/net"] = (4, 101)  # this thread entered another namespace
    assert sysctl.in_initial_netns() is False
    del ids["/proc/1/ns/net"]  # pid 1 unreadable: the kernel's mark (nf_conntrack_max mode) decides
    monkeypatch.setattr(sysctl, "_KERNEL_MARK", "/nonexistent/nf_conntrack_max")
    assert sysctl.in_initial_netns() is False  # no answer at all: not initial


@pytest.mark.parametrize("text,expected", [
    ("nf_conntrack_tcp_loose=0", ("nf_conntrack_tcp_loose", "0")),
    ("net.netfilter.nf_conntrack_max=1000", ("nf_conntrack_max", "1000")),
    ("net/netfilter/nf_hooks_lwtunnel = 1", ("nf_hooks_lwtunnel", "1")),
])
def test_parse_assignment(text, expected):
    assert sysctl.parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["nf_conntrack_tcp_loose", "=1", "nf_conntrack_tcp_loose=", "../x=1",
                                  "a/b=1", ".hidden=1"])
def test_parse_assignment_refuses(text):
    with pytest.raises(UsageError):
        sysctl.parse_assignment(text)


# ------------------------------------------------------ plan / apply_plan

@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake net.netfilter directory; returns a function to create a sysctl file."""
    monkeypatch.setattr(sysctl, "BASE", str(tmp_path))

    def make(name: str, value: str, mode: int = 0o644) -> None:
        path = tmp_path / name
        path.write_text(value + "\n")
        os.chmod(path, mode)
    make("nf_conntrack_tcp_loose", "1")
    make("nf_conntrack_udp_timeout", "30")
    make("nf_conntrack_count", "0", 0o444)
    make("nf_conntrack_max", "262144", 0o444)
    make("nf_hooks_lwtunnel", "0")
    make("nf_conntrack_brand_new", "5")
    make("nf_conntrack_textual", "some words")

    def value(name: str) -> str:
        return (tmp_path / name).read_text().strip()
    make.value = value
    return make


def test_plan_in_a_namespace_refuses_host_wide_and_unknown(fake):
    with pytest.raises(UsageError) as exc:
        sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_hooks_lwtunnel", "1")], initial=False)
    assert "nf_hooks_lwtunnel" in str(exc.value) and "reboot" in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    with pytest.raises(UsageError, match="not known to be per network namespace"):
        sysctl.plan([("nf_conntrack_brand_new", "1")], initial=False)
    assert fake.value("nf_conntrack_tcp_loose") == "1" and fake.value("nf_hooks_lwtunnel") == "0"


def test_plan_reports_every_problem_at_once(fake):
    with pytest.raises(UsageError) as exc:
        sysctl.plan([("nf_conntrack_tcp_loose", "off"), ("nf_conntrack_count", "1"),
                     ("nf_conntrack_helper", "1"), ("nf_conntrack_max", "1")], initial=False)
    text = str(exc.value)
    assert "integer" in text and "'off'" in text
    assert "nf_conntrack_count is read-only" in text
    assert "nf_conntrack_helper does not exist" in text and "removed in Linux 6.0" in text
    assert "nf_conntrack_max is host-wide" in text


@pytest.mark.parametrize("value", ["1.5", "0x1", "١", "1 2", "", "+-1", "1\n2"])
def test_plan_wants_an_integer_where_the_kernel_has_one(fake, value):
    with pytest.raises(UsageError):
        sysctl.plan([("nf_conntrack_udp_timeout", value)], initial=False)


def test_plan_accepts_per_namespace_and_text(fake):
    changes = sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_udp_timeout", "-1")], initial=False)
    assert [(c.name, c.value, c.before) for c in changes] == [
        ("nf_conntrack_tcp_loose", "0", "1"), ("nf_conntrack_udp_timeout", "-1", "30")]
    assert sysctl.plan([("nf_hooks_lwtunnel", "1")], initial=True)[0].before == "0"  # the initial ns may
    with pytest.raises(UsageError, match="more than once"):
        sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_tcp_loose", "1")], initial=False)


def test_apply_plan_writes_all(fake):
    changes = sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_udp_timeout", "60")], initial=False)
    after = sysctl.apply_plan(changes)
    assert [(v.name, v.value) for v in after] == [("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_udp_timeout", "60")]


def test_a_failed_write_restores_the_earlier_ones(fake, monkeypatch):
    real = sysctl._write_raw

    def failing(name, value):
        if name == "nf_conntrack_udp_timeout":
            raise UsageError("the kernel refused '60' for net.netfilter.nf_conntrack_udp_timeout")
        real(name, value)
    monkeypatch.setattr(sysctl, "_write_raw", failing)
    changes = sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_udp_timeout", "60")], initial=False)
    with pytest.raises(UsageError) as exc:
        sysctl.apply_plan(changes)
    assert "restored net.netfilter.nf_conntrack_tcp_loose=1" in str(exc.value)
    assert fake.value("nf_conntrack_tcp_loose") == "1"


def test_a_failed_restore_is_reported(fake, monkeypatch):
    calls = []

    def failing(name, value):
        calls.append((name, value))
        if len(calls) > 1:
            raise KernelError(f"cannot write net.netfilter.{name}: I/O error")
    monkeypatch.setattr(sysctl, "_write_raw", failing)
    changes = sysctl.plan([("nf_conntrack_tcp_loose", "0"), ("nf_conntrack_udp_timeout", "60")], initial=False)
    with pytest.raises(KernelError, match="could NOT restore net.netfilter.nf_conntrack_tcp_loose"):
        sysctl.apply_plan(changes)


def test_write_refuses_host_wide_outside_the_initial_namespace(fake, monkeypatch):
    monkeypatch.setattr(sysctl, "in_initial_netns", lambda: False)
    with pytest.raises(KernelError, match="reboot"):
        sysctl.write("nf_hooks_lwtunnel", 1)
    assert fake.value("nf_hooks_lwtunnel") == "0"
    sysctl.write("nf_conntrack_tcp_loose", 0)
    assert fake.value("nf_conntrack_tcp_loose") == "0"
