"""Settings drift: each conntrack setting of the policy against the live sysctl."""
from __future__ import annotations

from dataclasses import dataclass

from ctkit.compile.ir import SysctlSetting
from ctkit.kernel import sysctl
from ctkit.kernel.netns import entered


@dataclass(frozen=True)
class SettingState:
    setting: SysctlSetting
    live: str | None
    exists: bool
    writable: bool

    @property
    def met(self) -> bool:
        return self.setting.met_by(self.live if self.exists else None)

    @property
    def note(self) -> str:
        if not self.exists:
            return ("absent on this kernel: the requirement is met" if self.setting.absent_ok
                    else "absent on this kernel: cannot be met")
        if not self.writable:
            return "host-wide, read-only in this namespace" + ("" if self.met else ": set it in the initial namespace")
        return "" if self.met else "writable here: `ctkit apply` sets it"

    def as_dict(self) -> dict:
        return {"key": self.setting.key, "sysctl": f"net.netfilter.{self.setting.sysctl}",
                "wanted": self.setting.value, "live": self.live, "exists": self.exists,
                "writable": self.writable, "met": self.met, "note": self.note}


def read_settings(settings: tuple[SysctlSetting, ...], netns: str | None) -> list[SettingState]:
    out = []
    with entered(netns):
        for s in settings:
            v = sysctl.read(s.sysctl)
            out.append(SettingState(s, v.value, v.exists, v.writable))
    return out
