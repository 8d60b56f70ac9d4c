"""Boot files: what a host loads at boot so that a policy survives a reboot (`ctkit export`).

The backend writes its ruleset files (Backend.boot_files: an nft file for an
nftables.d include, iptables-restore files for --noflush); this module adds the
files that are the same for every backend and writes them all into one
directory:

  90-<table>.conf                 sysctl.d: the policy's net.netfilter settings
  <table>-modules-load.conf       modules-load.d: nf_conntrack, so the sysctls exist when systemd-sysctl runs
  <table>-modprobe.conf           modprobe.d: nf_conntrack module parameters (hashsize; nf_conntrack_helper < 6.0)
  ctkit-<table>.service           a systemd unit that runs `ctkit apply` at boot: the one way that
                                  restores everything (ruleset, ipsets, cttimeout objects, settings)

Each file is written atomically: a temporary file in the same directory, fsync,
rename over the target; a target that is a symlink or anything but a regular
file is refused before any file is written (the stance of `exporter --textfile`).
Nothing here reads or writes the kernel's rules; the host facts it uses (kernel
release, whether nf_conntrack is built in) are read from /proc and /sys.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctkit.backends.base import BOOT_INSTALL, BOOT_NOTE
from ctkit.errors import UsageError
from ctkit.kernel import sysctl
from ctkit.paths import check_writable_target

if TYPE_CHECKING:
    from ctkit.backends.base import Backend
    from ctkit.compile import ir
    from ctkit.pipeline import Compiled

#: sysctls a newer kernel no longer has: (major, minor) of the first release without them
REMOVED_IN = {"nf_conntrack_helper": (6, 0)}
#: policy sysctls that are also nf_conntrack module parameters (modprobe.d), and the parameter's name
MODULE_PARAMETERS = {"nf_conntrack_buckets": "hashsize", "nf_conntrack_helper": "nf_conntrack_helper"}
#: paths a reboot empties: a unit that reads the policy from there finds nothing
_VOLATILE = ("/tmp/", "/var/tmp/", "/run/", "/dev/shm/")


@dataclass(frozen=True)
class HostFacts:
    """What the boot files depend on about the kernel they are for (by default: this host's)."""
    release: str  # uname -r
    conntrack: str  # how nf_conntrack is present: builtin | module | not loaded

    @classmethod
    def read(cls) -> HostFacts:
        base = "/sys/module/nf_conntrack"
        if not os.path.isdir(base):
            how = "not loaded"
        else:  # a loadable module has an initstate file; one built into the kernel has none
            how = "module" if os.path.exists(os.path.join(base, "initstate")) else "builtin"
        return cls(os.uname().release, how)

    @property
    def version(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass(frozen=True)
class ExportedFile:
    name: str
    path: Path
    install: str  # where it goes and how it is loaded (the file's BOOT_INSTALL line)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "install": self.install}


@dataclass(frozen=True)
class ExportResult:
    backend: str
    table: str
    directory: Path
    files: tuple[ExportedFile, ...]
    notes: tuple[str, ...] = field(default=())  # what the user must know, each said once

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "table": self.table, "directory": str(self.directory),
                "files": [f.as_dict() for f in self.files], "notes": list(self.notes)}


# ------------------------------------------------------------ the files

def sysctl_conf(plan: ir.Plan, host: HostFacts, source: str | None = None) -> str | None:
    """sysctl.d text for the policy's settings; None when the policy has none."""
    if not plan.settings:
        return None
    table = plan.table.name
    lines = [f"# ctkit boot file: the conntrack settings of table {table}" + (f" from {source}" if source else ""),
             f"{BOOT_INSTALL}/etc/sysctl.d/90-{table}.conf (systemd-sysctl or `sysctl --system` applies it "
             "at boot; `sysctl -p FILE` now)",
             "# applied in the initial network namespace only: other namespaces keep the kernel's defaults "
             "for per-namespace keys (ctkit apply --netns sets them there)",
             f"# the keys exist once nf_conntrack is loaded: {table}-modules-load.conf loads it before "
             "systemd-sysctl runs"]
    for s in plan.settings:
        removed = REMOVED_IN.get(s.sysctl)
        if s.absent_ok and removed and host.version >= removed:
            why = sysctl.ABSENT_MEANS.get(s.sysctl, f"removed in Linux {removed[0]}.{removed[1]}")
            lines.append(f"# net.netfilter.{s.sysctl} = {s.value}: not written for Linux {host.release}: "
                         f"{why}; the policy's {s.key} is met without it")
            continue
        if not sysctl.is_per_namespace(s.sysctl):  # no comment after a value: sysctl.d has none
            lines.append(f"# host-wide: one value for the whole machine ({s.key})")
        lines.append(f"net.netfilter.{s.sysctl} = {s.value}")
    return "\n".join(lines) + "\n"


def modules_load_conf(plan: ir.Plan) -> str:
    table = plan.table.name
    return (f"# ctkit boot file: load nf_conntrack early, so that 90-{table}.conf finds its sysctls\n"
            f"{BOOT_INSTALL}/etc/modules-load.d/{table}.conf (systemd-modules-load runs before systemd-sysctl)\n"
            "nf_conntrack\n")


def modprobe_conf(plan: ir.Plan, host: HostFacts) -> tuple[str | None, list[str]]:
    """modprobe.d text for the settings that are also module parameters (None: there are none), and notes."""
    options, notes = [], []
    for s in plan.settings:
        param = MODULE_PARAMETERS.get(s.sysctl)
        if param is None:
            continue
        removed = REMOVED_IN.get(s.sysctl)
        if removed and host.version >= removed:
            notes.append(f"modprobe.d: no {param}= option: nf_conntrack has no such parameter since Linux "
                         f"{removed[0]}.{removed[1]} (this is for Linux {host.release})")
            continue
        options.append(f"{param}={s.value}")
    if not options:
        return None, notes
    table = plan.table.name
    lines = [f"# ctkit boot file: nf_conntrack module parameters of table {table}",
             f"{BOOT_INSTALL}/etc/modprobe.d/{table}.conf (read when the module is loaded; rebuild the "
             "initramfs if it loads nf_conntrack)",
             "# module parameters do nothing when nf_conntrack is built into the kernel: then give them on the "
             "kernel command line (" + " ".join(f"nf_conntrack.{o}" for o in options) + ")"]
    if host.conntrack == "builtin":
        text = (f"nf_conntrack is built into Linux {host.release}: the options in {table}-modprobe.conf do nothing "
                "there; use the kernel command line (" + " ".join(f"nf_conntrack.{o}" for o in options)
                + ") or the sysctls")
        lines.append(BOOT_NOTE + text)
    lines.append("options nf_conntrack " + " ".join(options))
    return "\n".join(lines) + "\n", notes


def _unit_word(text: str, exec_line: bool) -> str:
    """One word of a unit file line, quoted the way systemd reads it back."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "\u0085\u2028\u2029" for c in text):
        raise UsageError(f"{text!r} holds a control character: it cannot go into a systemd unit")
    text = text.replace("%", "%%")  # specifiers
    if exec_line:
        text = text.replace("$", "$$")  # environment variables
    if re.fullmatch(r"[A-Za-z0-9/._+:@=,%$-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ctkit_command() -> tuple[str, ...]:
    """How a unit runs this ctkit: the script beside this Python (a virtualenv's bin/ctkit), the one on
    PATH, or this Python with -m ctkit."""
    here = Path(os.path.abspath(sys.executable)).parent / "ctkit"  # not resolved: a venv's python is a link
    if os.access(here, os.X_OK):
        return (str(here),)
    found = shutil.which("ctkit")
    if found:
        return (os.path.abspath(found),)
    return (os.path.abspath(sys.executable), "-m", "ctkit")


def systemd_unit(plan: ir.Plan, policy: str, command: tuple[str, ...], apply_args: tuple[str, ...]) -> str:
    """A oneshot unit that applies the policy before the network comes up (as nftables.service does)."""
    table = plan.table.name
    argv = " ".join(_unit_word(w, True) for w in (*command, "apply", policy, *apply_args))
    mounts = " ".join(_unit_word(p, False) for p in dict.fromkeys((os.path.dirname(policy),
                                                                    os.path.dirname(command[0]))))
    return "\n".join([
        f"# ctkit boot file: apply {policy} at boot (ruleset, ipsets, timeout objects and conntrack settings)",
        f"{BOOT_INSTALL}/etc/systemd/system/ctkit-{table}.service, then `systemctl daemon-reload && "
        f"systemctl enable ctkit-{table}.service`",
        "# ordered before network-pre.target, like nftables.service: no interface is up before the rules are;",
        "# `systemctl reload` re-applies the policy; `systemctl stop` leaves the rules in place (ctkit remove "
        "deletes them)",
        "[Unit]",
        f"Description=ctkit netfilter policy (table {table})",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "After=local-fs.target systemd-modules-load.service systemd-sysctl.service",
        "Before=network-pre.target network.target shutdown.target",
        "Conflicts=shutdown.target",
        f"RequiresMountsFor={mounts}",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={argv}",
        f"ExecReload={argv}",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
    ]) + "\n"


# ------------------------------------------------------------ writing

def check_target(path: Path) -> None:
    check_writable_target(path, str(path), "ctkit export")


def write_file(directory: Path, name: str, content: str) -> Path:
    """Write `content` to directory/name atomically (mode 0644): temporary file, fsync, rename."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"not a file name: {name!r}")
    target = directory / name
    check_target(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare(directory: Path) -> Path:
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--dir {directory} exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create --dir {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise UsageError(f"--dir {directory} is not a directory")
    return directory


def _header(content: str, start: str) -> list[str]:
    out = []
    for line in content.split("\n"):
        if not line.startswith("#"):
            break
        if line.startswith(start):
            out.append(line[len(start):])
    return out


def boot_files(compiled: Compiled, backend: Backend, policy_path: str | Path, *,
               ctkit: tuple[str, ...] | None = None, apply_args: tuple[str, ...] | None = None,
               host: HostFacts | None = None) -> tuple[dict[str, str], list[str]]:
    """Every boot file (name -> content) and the notes that are not in a file's header."""
    plan = compiled.plan
    host = host or HostFacts.read()
    policy = os.path.abspath(policy_path)
    files = dict(backend.boot_files(plan, policy))
    notes: list[str] = []
    text = sysctl_conf(plan, host, policy)
    if text is not None:
        files[f"90-{plan.table.name}.conf"] = text
        files[f"{plan.table.name}-modules-load.conf"] = modules_load_conf(plan)
    else:
        notes.append("no sysctl.d file: the policy sets no conntrack settings")
    text, more = modprobe_conf(plan, host)
    notes += more
    if text is not None:
        files[f"{plan.table.name}-modprobe.conf"] = text
    args = apply_args if apply_args is not None else ("--backend", backend.name)
    files[f"ctkit-{plan.table.name}.service"] = systemd_unit(plan, policy, ctkit or ctkit_command(), tuple(args))
    if policy.startswith(_VOLATILE):
        notes.append(f"the unit reads {policy} at every boot, and a reboot empties that place: keep the policy "
                     "in /etc (e.g. /etc/ctkit/) and export again")
    return files, notes


def export(compiled: Compiled, backend: Backend, directory: str | Path, policy_path: str | Path, *,
           ctkit: tuple[str, ...] | None = None, apply_args: tuple[str, ...] | None = None,
           host: HostFacts | None = None) -> ExportResult:
    """Write the boot files for `compiled` into `directory` (created when missing), each atomically.
    Every target is checked before the first is written: a refusal writes nothing."""
    files, notes = boot_files(compiled, backend, policy_path, ctkit=ctkit, apply_args=apply_args, host=host)
    where = _prepare(Path(directory))
    for name in files:
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"not a file name: {name!r}")
        check_target(where / name)
    written = []
    for name, content in files.items():
        path = write_file(where, name, content)
        install = _header(content, BOOT_INSTALL)
        written.append(ExportedFile(name, path, install[0] if install else ""))
        notes += _header(content, BOOT_NOTE)
    _fsync_dir(where)
    return ExportResult(backend.name, compiled.plan.table.name, where, tuple(written), tuple(dict.fromkeys(notes)))
