"""ipset sets for the iptables backend, through `ipset restore`, inside a namespace.

The iptables backend names its sets `<table>-<name>` (ctkit-blocklist) and
describes them (ctkit/backends/iptables.py: IpSet); this module makes the
kernel hold exactly those. A set's contents are replaced atomically: a
temporary set is filled, then swapped with the live one (`ipset swap`), so a
rule matching the set sees the old members or the new ones, never an empty
set. Sets ctkit no longer declares are destroyed after the rules that used
them are gone. Debian package: ipset.
"""
from __future__ import annotations

import shutil
import subprocess

from ctkit.errors import KernelError, UsageError
from ctkit.kernel.netns import entered

TIMEOUT = 60
_INSTALL = "install the Debian package ipset (apt-get install ipset)"


def _ipset() -> str:
    exe = shutil.which("ipset")
    if exe is None:
        raise KernelError(f"the ipset command is missing: {_INSTALL}")
    return exe


def _run(args: list[str], netns: str | None, what: str, input: str | None = None, check: bool = True
         ) -> subprocess.CompletedProcess:
    with entered(netns):
        proc = subprocess.run([_ipset(), *args], input=input, capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise KernelError(f"{what}: {proc.stderr.strip() or 'ipset failed'}")
    return proc


def names(netns: str | None) -> list[str]:
    return _run(["list", "-n"], netns, "cannot list ipsets").stdout.split()


def _create_line(name: str, s) -> str:
    line = f"create {name} {s.kind} family {'inet' if s.family == 'ipv4' else 'inet6'}" if s.kind != "bitmap:port" \
        else f"create {name} bitmap:port range 0-65535"
    if s.timeout is not None:
        line += f" timeout {s.timeout}"
    return line


def _add_lines(name: str, s) -> list[str]:
    return [f"add {name} {value}" + (f" timeout {t}" if t is not None else "") for value, t in s.elements]


def sync(sets, prefix: str, netns: str | None) -> None:
    """Make the kernel's sets named <prefix>* the given ones (IpSet objects); contents swap atomically."""
    existing = set(names(netns))
    lines = []
    for s in sets:
        tmp = (s.name[:27] + "-new")
        lines.append(_create_line(tmp, s) + " -exist")
        lines.append(f"flush {tmp}")
        lines += _add_lines(tmp, s)
        if s.name not in existing:
            lines.append(_create_line(s.name, s))
        lines.append(f"swap {tmp} {s.name}")
        lines.append(f"destroy {tmp}")
    if lines:
        _run(["restore"], netns, "ipset refused the sets", input="\n".join(lines) + "\n")


def destroy_stale(keep: set[str], prefix: str, netns: str | None) -> None:
    """Destroy ctkit's sets (named <prefix>...) that no rule uses any more."""
    for name in names(netns):
        if name.startswith(prefix) and name not in keep:
            _run(["destroy", name], netns, f"cannot destroy ipset {name}", check=False)


def add(name: str, value: str, timeout: int | None, netns: str | None) -> None:
    args = ["add", name, value, "-exist"] + (["timeout", str(timeout)] if timeout is not None else [])
    proc = _run(args, netns, f"cannot add {value} to {name}", check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise UsageError(f"no set {name} (apply a policy that declares it)")
        raise KernelError(f"cannot add {value} to {name}: {proc.stderr.strip()}")


def delete(name: str, value: str, netns: str | None) -> None:
    proc = _run(["del", name, value, "-exist"], netns, f"cannot delete {value} from {name}", check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise UsageError(f"no set {name} (apply a policy that declares it)")
        raise KernelError(f"cannot delete {value} from {name}: {proc.stderr.strip()}")
