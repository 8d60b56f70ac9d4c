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


def test_drops_since_boot_and_since_last_audit():
    totals = {"drop": 5, "early_drop": 0, "invalid": 3, "insert_failed": 0}
    ids = {f.id: f.severity for f in health.drops(totals, None, None)}
    assert ids == {"conntrack.drop": "critical", "conntrack.invalid": "info"}
    # the same totals seen before: nothing new to report
    assert health.drops(totals, dict(totals), 60.0) == []
    (f,) = health.drops({**totals, "drop": 17}, dict(totals), 60.0)
    assert f.evidence == {"stat": "drop", "total": 17, "since_last_audit": 12, "per_second": 0.2}


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
