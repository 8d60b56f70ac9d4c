"""A live namespace's iptables rules, as iptables-save and ip6tables-save print them there.

The importer reads text only; this module runs the save tools inside the namespace (ctkit.kernel.netns)
and hands their output to the same path as --iptables-save files.
"""
from __future__ import annotations

import shutil
import subprocess

from ctkit.errors import KernelError, UsageError
from ctkit.kernel.netns import entered

VARIANTS = ("nft", "legacy", "auto")
TIMEOUT = 30


def save_texts(netns: str | None, variant: str = "auto") -> list[tuple[str, str]]:
    """[(source name, text)] for IPv4 and IPv6; a family whose output has no rule is left out."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown iptables variant {variant!r} (valid: {', '.join(VARIANTS)})")
    out = []
    for tool in ("iptables", "ip6tables"):
        name = f"{tool}-save" if variant == "auto" else f"{tool}-{variant}-save"
        path = shutil.which(name)
        if path is None:
            raise KernelError(f"{name} not found: install the Debian package iptables")
        try:
            with entered(netns):
                proc = subprocess.run([path], capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise KernelError(f"{name} did not finish within {TIMEOUT} s (xtables lock held?)") from None
        if proc.returncode != 0:
            raise KernelError(f"{name} in {netns or 'this namespace'}: "
                              f"{proc.stderr.decode('utf-8', 'replace').strip() or 'failed'}")
        text = proc.stdout.decode("utf-8", errors="surrogateescape")
        if "\n-A " in "\n" + text:
            out.append((f"{name}@{netns or 'this namespace'}", text))
    return out


def nft_text(netns: str | None) -> tuple[str, str]:
    """(source name, `nft -j list ruleset` output) in the namespace."""
    path = shutil.which("nft")
    if path is None:
        raise KernelError("nft not found: install the Debian package nftables")
    try:
        with entered(netns):
            proc = subprocess.run([path, "-j", "list", "ruleset"], capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KernelError(f"nft did not finish within {TIMEOUT} s") from None
    if proc.returncode != 0:
        raise KernelError(f"nft -j list ruleset in {netns or 'this namespace'}: "
                          f"{proc.stderr.decode('utf-8', 'replace').strip() or 'failed'}")
    return f"nft@{netns or 'this namespace'}", proc.stdout.decode("utf-8", errors="surrogateescape")


def ipset_text(netns: str | None) -> str:
    """`ipset save` in the namespace; empty when ipset is not installed (the rules that use sets are listed)."""
    path = shutil.which("ipset")
    if path is None:
        return ""
    try:
        with entered(netns):
            proc = subprocess.run([path, "save"], capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KernelError(f"ipset save did not finish within {TIMEOUT} s") from None
    return proc.stdout.decode("utf-8", errors="surrogateescape") if proc.returncode == 0 else ""
