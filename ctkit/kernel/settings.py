"""Apply the policy's host conntrack settings (net.netfilter sysctls) where this namespace can.

A host-wide setting that is read-only here is reported, not failed on: the
audit says whether the host meets it. A sysctl the kernel does not have is
met when the wish is its absence (nf_conntrack_helper=0 on Linux >= 6.0).
"""
from __future__ import annotations

from dataclasses import dataclass

from ctkit.compile.ir import SysctlSetting
from ctkit.errors import KernelError
from ctkit.kernel import sysctl
from ctkit.kernel.netns import entered

#: outcomes
CHANGED, UNCHANGED, READ_ONLY, ABSENT_MET, ABSENT, WOULD_CHANGE = (
    "changed", "unchanged", "read-only", "absent (met)", "absent", "would change")


@dataclass(frozen=True)
class SettingResult:
    setting: SysctlSetting
    before: str | None
    result: str

    @property
    def ok(self) -> bool:
        return self.result in (CHANGED, UNCHANGED, ABSENT_MET, WOULD_CHANGE) or (
            self.result == READ_ONLY and self.setting.met_by(self.before))

    def as_dict(self) -> dict:
        return {"key": self.setting.key, "sysctl": f"net.netfilter.{self.setting.sysctl}",
                "wanted": self.setting.value, "before": self.before, "result": self.result, "met": self.ok}


def apply_settings(settings: tuple[SysctlSetting, ...], netns: str | None = None,
                   dry_run: bool = False) -> list[SettingResult]:
    results = []
    with entered(netns):
        for s in settings:
            current = sysctl.read(s.sysctl)
            if not current.exists:
                results.append(SettingResult(s, None, ABSENT_MET if s.absent_ok else ABSENT))
            elif s.met_by(current.value):
                results.append(SettingResult(s, current.value, UNCHANGED))
            elif not current.writable:
                results.append(SettingResult(s, current.value, READ_ONLY))
            elif dry_run:
                results.append(SettingResult(s, current.value, WOULD_CHANGE))
            else:
                try:
                    sysctl.write(s.sysctl, s.value)
                except KernelError:
                    results.append(SettingResult(s, current.value, READ_ONLY))
                    continue
                results.append(SettingResult(s, current.value, CHANGED))
    return results
