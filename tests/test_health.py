"""Health checks as pure functions of the figures the kernel reader supplies."""
from ctkit.audit import health
from ctkit.policy.load import load_document

SLAB = ("slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n"
        "nf_conntrack      200032 200032    256   16    1 : tunables    0    0    0 : slabdata  12502  12502      0\n")


def test_entry_size_from_slabinfo_or_fallback():
    assert health.entry_size(SLAB).entry_bytes == 256 + health.EXTENSION_BYTES
    assert "slabinfo" in health.entry_size(SLAB).source
    assert health.entry_size(None).entry_bytes == health.FALLBACK_ENTRY_BYTES


def test_fill_thresholds_and_sizing():
    sizing = health.entry_size(SLAB)
    assert health.fill(700, 1000, 1000, 0, sizing, True) == []
    (warn,) = health.fill(800, 1000, 1000, 0, sizing, True)
    assert warn.severity == "warning"
    (crit,) = health.fill(950, 1000, 1000, 1200, sizing, False)
    assert crit.severity == "critical"
    assert crit.evidence["suggested_max"] == 4096  # twice the peak of 1200, rounded up to a power of two
    assert crit.evidence["memory_bytes"] == 4096 * (256 + 128) + 4096 * 8
    assert "initial namespace" in crit.remedy


def test_drops_since_the_last_audit():
    totals = {"drop": 5, "early_drop": 0, "invalid": 3, "insert_failed": 0}
    # the same totals seen before: nothing new to report
    assert health.drops(totals, dict(totals), 60.0) == []
    (f,) = health.drops({**totals, "drop": 17}, dict(totals), 60.0)
    assert f.evidence == {"stat": "drop", "total": 17, "since_last_audit": 12, "per_second": 0.2}
    assert (f.severity, f.message) == (
        "critical", "drop rose by 12 since the last audit: new flows were dropped because the conntrack table was full")
    (reset,) = health.drops({"drop": 3}, {"drop": 40}, 60.0)  # lower than before: a reboot, counted from zero
    assert reset.evidence["since_last_audit"] == 3


def test_a_drop_long_ago_without_a_baseline_is_no_longer_critical():
    """5 drops in 30 days: the rate over the uptime is far below one a minute, and nothing tells when."""
    totals = {"drop": 5, "early_drop": 0, "invalid": 3, "insert_failed": 0}
    found = health.drops(totals, None, None, uptime=30 * 86400)
    assert [(f.id, f.severity) for f in found] == [("conntrack.drop", "info"), ("conntrack.invalid", "info")]
    drop = found[0]
    assert drop.message == (
        "drop is 5 since the counters started, under 0.01 per minute on average over the host's uptime of 30 d 0 h: "
        "too few to say it still happens, and no baseline from an earlier audit tells when they rose: new flows "
        "were dropped because the conntrack table was full")
    assert drop.remedy == (
        "audit with --state FILE: each later audit judges only what rose since the one before; raise "
        "nf_conntrack_max (see the sizing finding) or stop tracking bulk traffic with notrack")
    assert drop.evidence == {"stat": "drop", "total": 5, "baseline": False, "uptime_seconds": 2592000,
                             "per_minute_since_boot": 0.0001}


def test_drops_at_a_high_rate_over_the_uptime_keep_their_severity():
    (drop, early) = health.drops({"drop": 500, "early_drop": 90}, None, None, uptime=120)
    assert (drop.severity, early.severity) == ("critical", "warning")
    assert drop.message == (
        "drop is 500 since the counters started, 250 per minute on average over the host's uptime of 2 min "
        "(no baseline from an earlier audit): new flows were dropped because the conntrack table was full")
    assert drop.remedy.endswith("; audit with --state FILE: each later audit judges only what rose since the one "
                                "before")
    assert drop.evidence["per_minute_since_boot"] == 250.0
    # one a minute on average is the line (health.SINCE_BOOT_PER_MINUTE)
    assert health.drops({"drop": 60}, None, None, uptime=3600)[0].severity == "critical"
    assert health.drops({"drop": 59}, None, None, uptime=3600)[0].severity == "info"


def test_without_the_uptime_the_severity_is_lowered_one_step(monkeypatch):
    monkeypatch.setattr(health, "UPTIME", "/nonexistent/uptime")
    assert health.host_uptime() is None
    (drop, failed) = health.drops({"drop": 10**6, "insert_failed": 4}, None, None)
    assert (drop.severity, failed.severity) == ("warning", "info")
    assert drop.message == ("drop is 1000000 since the counters started; the host's uptime is unknown and no "
                            "baseline from an earlier audit tells when they rose: new flows were dropped because "
                            "the conntrack table was full")


def test_the_uptime_is_read_from_proc_only_when_needed(monkeypatch, tmp_path):
    uptime = tmp_path / "uptime"
    uptime.write_text("7200.51 14000.02\n")
    monkeypatch.setattr(health, "UPTIME", str(uptime))
    assert health.host_uptime() == 7200.51
    (drop,) = health.drops({"drop": 7201}, None, None)
    assert drop.severity == "critical" and drop.evidence["uptime_seconds"] == 7201
    assert "over the host's uptime of 2 h 0 min" in drop.message
    assert [health.duration(s) for s in (40, 720, 7500, 3 * 86400 + 4 * 3600)] == ["40 s", "12 min", "2 h 5 min",
                                                                                    "3 d 4 h"]


def test_autoassign_and_expectations():
    assert health.autoassign(None) == [] and health.autoassign("0") == []
    assert health.autoassign("1")[0].severity == "critical"
    assert health.expectations(10, 4096) == []
    assert health.expectations(3500, 4096)[0].severity == "warning"


def test_untracked_icmp():
    policy = load_document({"version": 1,
                            "helpers": [{"name": "f", "helper": "ftp", "protocol": "tcp", "ports": 21}],
                            "notrack": [{"name": "d", "protocol": "udp", "ports": 53}],
                            "chains": {"input": {"policy": "drop", "rules": [
                                {"ct_state": ["untracked"], "action": "accept"}]}}})
    assert [f.id for f in health.untracked_icmp(policy)] == ["notrack.icmp-errors"]
