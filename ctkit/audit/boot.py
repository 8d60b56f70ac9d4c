"""`ctkit audit POLICY --boot DIR`: would a reboot bring back what runs now?

The boot files `ctkit export` wrote are loaded the way the distribution's tools load them
(Backend.load_boot) into a scratch namespace that exists only for this check; what ctkit owns
there is compared with what it owns in the running namespace, with the audit's own comparison
(audit/drift.py): "missing" runs now but boot would not load it, "extra" boot would load it but it
does not run, "changed" differs. The sysctl.d file is compared with the running values (read in
the audited namespace; at boot systemd-sysctl applies it in the initial one). Files that do not load at all (an
iptables file that names a cttimeout object no boot tool creates) are reported with the tool's
message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ctkit.audit.drift import Drift, compare
from ctkit.errors import KernelError

if TYPE_CHECKING:
    from ctkit.backends.base import Backend
    from ctkit.pipeline import Compiled

_SYSCTL_LINE = re.compile(r"^\s*net\.netfilter\.([a-z0-9_]+)\s*=\s*(\S+)\s*$")


@dataclass(frozen=True)
class BootCheck:
    directory: str
    loaded: tuple[str, ...]  # the files loaded into the scratch namespace
    error: str | None  # why the boot files did not load (None: they did)
    drift: tuple[Drift, ...]  # expected: what runs; actual: what boot would load

    @property
    def clean(self) -> bool:
        return self.error is None and not self.drift

    def as_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "clean": self.clean, "loaded": list(self.loaded), "error": self.error,
                "drift": [d.as_dict() for d in self.drift]}


def _sysctl_drift(compiled: Compiled, directory: str, netns: str | None) -> list[Drift]:
    from ctkit.kernel import sysctl
    from ctkit.kernel.netns import entered
    table = compiled.plan.table.name
    path = os.path.join(directory, f"90-{table}.conf")
    try:
        with open(path, encoding="utf-8") as f:
            booted = {m.group(1): m.group(2) for m in map(_SYSCTL_LINE.match, f.read().split("\n")) if m}
    except FileNotFoundError:
        booted = {}
    out = []
    for s in compiled.plan.settings:
        with entered(netns):  # per-namespace keys as they run there; host-wide ones read the same anywhere
            now = sysctl.read(s.sysctl)
        if not now.exists:
            continue
        at_boot = booted.get(s.sysctl)
        if at_boot is None:
            if not s.met_by(now.value):
                continue  # neither sets it the policy's way: the audit's settings check reports that
            out.append(Drift("missing-setting", f"sysctl net.netfilter.{s.sysctl}", None, now.value,
                             f"not in {path}: the kernel's default at boot"))
        elif at_boot.split() != now.value.split():
            out.append(Drift("changed-setting", f"sysctl net.netfilter.{s.sysctl}", None, now.value,
                             f"{at_boot} ({path})"))
    return out


def check(compiled: Compiled, backend: Backend, directory: str, netns: str | None) -> BootCheck:
    from ctkit.kernel.netns import scratch
    table = compiled.plan.table.name
    live = backend.inspect(compiled.plan, netns)
    settings = _sysctl_drift(compiled, directory, netns)
    with scratch("ctkit-boot") as ns:
        try:
            loaded = backend.load_boot(table, directory, ns)
        except KernelError as exc:
            return BootCheck(directory, (), str(exc), tuple(settings))
        boot = backend.inspect(compiled.plan, ns)
    at_boot = {v.where: v for v in boot.views}
    drift: list[Drift] = []
    for v in live.views:
        b = at_boot.pop(v.where, None)
        if b is None:
            drift.append(Drift("missing-table", v.where, None, "runs now", "boot loads nothing of it"))
            continue
        running = b.want if v.held else v.have  # held: what runs is the compiled policy, as at boot
        if not running.present and not b.have.present:
            continue
        for d in compare(running, b.have, {}, v.where):
            drift.append(replace(d, subject=v.subject_prefix + d.subject) if v.subject_prefix else d)
    for b in at_boot.values():
        drift.append(Drift("extra-table", b.where, None, "does not run now", "boot would load it"))
    return BootCheck(directory, loaded, None, tuple(drift + settings))
