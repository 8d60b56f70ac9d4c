"""One rule for "this sysctl meets the policy", shared by `ctkit apply` and the audit."""
from ctkit.audit.settings import SettingState
from ctkit.compile.ir import SysctlSetting
from ctkit.kernel.settings import READ_ONLY, SettingResult

MAX = SysctlSetting("max", "nf_conntrack_max", 262144, "/conntrack/max")
HELPER = SysctlSetting("helper", "nf_conntrack_helper", 0, "/conntrack/helper", absent_ok=True)


def test_compared_as_numbers_not_text():
    assert MAX.met_by("262144") and MAX.met_by("262144\n") and MAX.met_by(" 262144")
    assert not MAX.met_by("262145") and not MAX.met_by("") and not MAX.met_by("lots")


def test_absent_is_met_only_when_absence_is_the_wish():
    assert HELPER.met_by(None) and not MAX.met_by(None)


def test_apply_and_audit_agree():
    for live in ("262144", "262144\n", "1", None):
        audit = SettingState(MAX, live, live is not None, False).met
        applied = SettingResult(MAX, live, READ_ONLY).ok
        assert audit == applied == MAX.met_by(live)
