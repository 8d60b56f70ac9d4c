"""`ctkit export`: the boot files, their contents and how they are written (no root, no kernel)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from goldens import ROOT
from test_service import FakeBackend

from ctkit import export, pipeline, service
from ctkit.backends import registry
from ctkit.backends.base import BOOT_INSTALL
from ctkit.errors import UsageError

EXAMPLES = ROOT / "examples"
NEW = export.HostFacts("6.18.44", "builtin")
OLD = export.HostFacts("5.10.0-28-amd64", "module")


def compiled(name: str):
    return pipeline.compile_file(EXAMPLES / name)


def policy(tmp_path, conntrack: dict, name: str = "p.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "conntrack": conntrack,
                                "chains": {"input": {"rules": [{"protocol": "tcp", "dport": 22,
                                                                "action": "accept"}]}}}))
    return path


# ------------------------------------------------------------ nft

@pytest.mark.parametrize("example", ["dns-server.json", "blocklist-set.json"])
def test_nft_file_replaces_only_ctkits_table(example):
    c = compiled(example)
    files = registry.get("nft").boot_files(c.plan, "/etc/ctkit/p.json")
    assert list(files) == ["ctkit.nft"]
    text = files["ctkit.nft"]
    # the renderer's prelude: one transaction that works with and without the table (idempotent)
    assert text.endswith(registry.get("nft").render(c.plan, "nft"))
    body = [ln for ln in text.split("\n") if ln and not ln.startswith("#")]
    assert body[:3] == ["add table inet ctkit", "delete table inet ctkit", "table inet ctkit {"]
    # nothing outside table inet ctkit: no flush, no other table, no other top-level command
    assert not re.search(r"^\s*(flush|delete|add|table)\b(?! table inet ctkit)", "\n".join(body[3:]), re.M)
    assert "flush ruleset" not in text
    assert f"{BOOT_INSTALL}/etc/nftables.d/ctkit.nft" in text
    assert ("resets the sets" in text) == (example == "blocklist-set.json")


def test_nft_file_follows_the_policys_table_name(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": 1, "table": "ctkitweb", "chains": {"input": {"rules": []}}}))
    files = registry.get("nft").boot_files(pipeline.compile_file(path).plan, None)
    assert list(files) == ["ctkitweb.nft"]
    assert "add table inet ctkitweb\ndelete table inet ctkitweb\n" in files["ctkitweb.nft"]


# ------------------------------------------------------------ iptables

def _rules(text: str) -> list[str]:
    return [ln for ln in text.split("\n") if ln and not ln.startswith("#")]


@pytest.mark.parametrize("example, names", [
    ("dns-server.json", ["ctkit.rules.v4", "ctkit.rules.v6"]),
    ("blocklist-set.json", ["ctkit.ipset", "ctkit.rules.v4", "ctkit.rules.v6"]),
])
def test_iptables_files_create_only_ctkits_chains_and_jumps(example, names):
    c = compiled(example)
    files = registry.get("iptables").boot_files(c.plan, "/etc/ctkit/p.json")
    assert sorted(files) == names
    for name in ("ctkit.rules.v4", "ctkit.rules.v6"):
        lines = _rules(files[name])
        assert lines and lines[0].startswith("*") and lines[-1] == "COMMIT"
        for ln in lines:
            if ln.startswith(("*", "COMMIT")):
                continue
            # declare a CTKIT- chain, fill it, or insert the one jump into it: never -F, -X, -D, -P, -N
            assert re.fullmatch(r":CTKIT-\S+ - \[0:0\]|-A CTKIT-\S+ .+|-I [A-Z]+ 1 -j CTKIT-\S+", ln), ln
        assert "--noflush" in files[name] and "iptables-persistent" in files[name]
    v4 = files["ctkit.rules.v4"]
    jumps = [ln for ln in _rules(v4) if ln.startswith("-I ")]
    assert jumps == (["-I PREROUTING 1 -j CTKIT-PREROUTING", "-I OUTPUT 1 -j CTKIT-OUTPUT",
                      "-I INPUT 1 -j CTKIT-INPUT", "-I OUTPUT 1 -j CTKIT-OUTPUT"]
                     if example == "dns-server.json" else ["-I INPUT 1 -j CTKIT-INPUT"])
    # the same rules `ctkit compile --backend iptables` prints for the family
    assert _rules(v4) == _rules(registry.get("iptables").render(c.plan, "restore", "ipv4"))
    if "ctkit.ipset" in files:
        body = _rules(files["ctkit.ipset"])
        assert body[0] == "create ctkit-blocklist hash:net family inet timeout 86400 -exist"
        assert "add ctkit-blocklist 203.0.113.7 timeout 3600 -exist" in body
        creates = [ln.split()[1] for ln in body if ln.startswith("create ")]
        assert sorted(creates) == ["ctkit-blocklist", "ctkit-blocklist6", "ctkit-web_ports"]  # web_ports once
        assert all(ln.endswith(" -exist") for ln in body)
        assert "load ctkit.ipset first" in v4


def test_iptables_files_say_that_timeout_objects_need_the_unit():
    files = registry.get("iptables").boot_files(compiled("dns-short-timeouts.json").plan, None)
    assert "CT --timeout" in files["ctkit.rules.v4"]
    assert "conntrack timeout objects" in files["ctkit.rules.v4"] and "ctkit-ctkit.service" in files["ctkit.rules.v4"]
    assert "timeout objects" not in registry.get("iptables").boot_files(compiled("dns-server.json").plan,
                                                                        None)["ctkit.rules.v4"]


# ------------------------------------------------------ sysctl.d, modprobe.d

def test_sysctl_conf_skips_the_helper_sysctl_on_linux_6_and_says_why():
    text = export.sysctl_conf(compiled("dns-server.json").plan, NEW, "/etc/ctkit/dns.json")
    body = _rules(text)
    assert body == ["net.netfilter.nf_conntrack_udp_timeout = 30",
                    "net.netfilter.nf_conntrack_udp_timeout_stream = 120"]
    (why,) = [ln for ln in text.split("\n") if "nf_conntrack_helper" in ln]
    assert why.startswith("# net.netfilter.nf_conntrack_helper = 0: not written for Linux 6.18.44: removed in "
                          "Linux 6.0")
    assert f"{BOOT_INSTALL}/etc/sysctl.d/90-ctkit.conf" in text


def test_sysctl_conf_writes_the_helper_sysctl_before_linux_6():
    body = _rules(export.sysctl_conf(compiled("ftp-helper.json").plan, OLD))
    assert body == ["net.netfilter.nf_conntrack_helper = 0"]


def test_sysctl_conf_host_wide_keys_and_no_trailing_comments(tmp_path):
    plan = pipeline.compile_file(policy(tmp_path, {"max": 262144, "buckets": 65536, "tcp_loose": False})).plan
    text = export.sysctl_conf(plan, NEW)
    assert _rules(text) == ["net.netfilter.nf_conntrack_max = 262144", "net.netfilter.nf_conntrack_buckets = 65536",
                            "net.netfilter.nf_conntrack_tcp_loose = 0"]
    assert text.count("# host-wide") == 2
    assert export.sysctl_conf(compiled("blocklist-set.json").plan, NEW) is None


def test_modprobe_conf_hashsize_and_helper(tmp_path):
    plan = pipeline.compile_file(policy(tmp_path, {"buckets": 65536, "helper_autoassign": False})).plan
    text, notes = export.modprobe_conf(plan, OLD)
    assert _rules(text) == ["options nf_conntrack hashsize=65536 nf_conntrack_helper=0"] and notes == []
    assert "built into the kernel" in text and "# note:" not in text  # OLD: a module
    text, notes = export.modprobe_conf(plan, NEW)
    assert _rules(text) == ["options nf_conntrack hashsize=65536"]
    assert "# note: nf_conntrack is built into Linux 6.18.44" in text
    assert notes and "no nf_conntrack_helper= option" in notes[0]


def test_modprobe_conf_only_when_a_parameter_is_set():
    assert export.modprobe_conf(compiled("dns-server.json").plan, NEW)[0] is None  # helper only, Linux 6
    assert export.modprobe_conf(compiled("dns-server.json").plan, OLD)[0] is not None
    assert export.modprobe_conf(compiled("blocklist-set.json").plan, OLD) == (None, [])


# ------------------------------------------------------------ the unit

def test_unit_applies_the_absolute_policy_with_the_backend(tmp_path):
    text = export.systemd_unit(compiled("dns-server.json").plan, "/etc/ctkit/dns.json", ("/usr/bin/ctkit",),
                               ("--backend", "iptables", "--iptables-variant", "legacy"))
    lines = text.split("\n")
    assert "ExecStart=/usr/bin/ctkit apply /etc/ctkit/dns.json --backend iptables --iptables-variant legacy" in lines
    for wanted in ("Type=oneshot", "RemainAfterExit=yes", "Before=network-pre.target network.target shutdown.target",
                   "Wants=network-pre.target", "DefaultDependencies=no", "WantedBy=sysinit.target",
                   "RequiresMountsFor=/etc/ctkit /usr/bin"):
        assert wanted in lines


def test_unit_quotes_what_systemd_would_expand_and_refuses_control_characters():
    plan = compiled("dns-server.json").plan
    text = export.systemd_unit(plan, '/srv/my pol%i$HOME"x.json', ("/usr/bin/ctkit",), ())
    assert 'ExecStart=/usr/bin/ctkit apply "/srv/my pol%%i$$HOME\\"x.json"' in text.split("\n")
    with pytest.raises(UsageError, match="control character"):
        export.systemd_unit(plan, "/srv/p.json\nExecStartPre=/bin/sh", ("/usr/bin/ctkit",), ())


# ------------------------------------------------------------ writing

def test_export_writes_every_file_atomically(tmp_path):
    out = tmp_path / "boot"
    result = service.export(compiled("dns-server.json"), registry.get("nft"), out, EXAMPLES / "dns-server.json",
                            ctkit=("/usr/bin/ctkit",), host=NEW)
    assert [f.name for f in result.files] == ["ctkit.nft", "90-ctkit.conf", "ctkit-modules-load.conf",
                                              "ctkit-ctkit.service"]
    assert sorted(os.listdir(out)) == sorted(f.name for f in result.files)  # no temporary file left
    for f in result.files:
        assert f.path == out / f.name and f.install
        assert os.stat(f.path).st_mode & 0o777 == 0o644
    assert (out / "ctkit.nft").read_text() == registry.get("nft").boot_files(
        compiled("dns-server.json").plan, str(EXAMPLES / "dns-server.json"))["ctkit.nft"]
    assert f"apply {EXAMPLES / 'dns-server.json'} --backend nft" in (out / "ctkit-ctkit.service").read_text()
    assert any("no nf_conntrack_helper= option" in n for n in result.notes)
    again = service.export(compiled("dns-server.json"), registry.get("nft"), out, EXAMPLES / "dns-server.json",
                           ctkit=("/usr/bin/ctkit",), host=NEW)
    assert [f.name for f in again.files] == [f.name for f in result.files]  # over its own files: fine


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_export_refuses_a_target_that_is_not_a_regular_file_and_writes_nothing(tmp_path, kind):
    out = tmp_path / "boot"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    target = out / "ctkit-ctkit.service"  # the last file written: a refusal must come before the first
    if kind == "symlink":
        target.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    with pytest.raises(UsageError, match=f"is a {kind if kind != 'fifo' else 'FIFO'}: ctkit export writes only"):
        service.export(compiled("dns-server.json"), registry.get("nft"), out, EXAMPLES / "dns-server.json",
                       ctkit=("/usr/bin/ctkit",), host=NEW)
    assert os.listdir(out) == ["ctkit-ctkit.service"]
    assert victim.read_text() == "keep me\n"
    if kind == "symlink":
        assert os.readlink(target) == str(victim)


def test_write_file_replaces_and_never_follows_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "a").write_text("old\n")
    assert export.write_file(tmp_path, "a", "new\n").read_text() == "new\n"
    (tmp_path / "b").symlink_to(victim)
    with pytest.raises(UsageError, match="is a symlink"):
        export.write_file(tmp_path, "b", "x\n")
    with pytest.raises(UsageError, match="not a file name"):
        export.write_file(tmp_path, "../c", "x\n")
    assert victim.read_text() == "keep me\n"


def test_export_refuses_a_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        service.export(compiled("dns-server.json"), registry.get("nft"), tmp_path / "f",
                       EXAMPLES / "dns-server.json", ctkit=("/usr/bin/ctkit",), host=NEW)


def test_export_goes_through_the_backend_seam(tmp_path):
    fake = FakeBackend()
    where = tmp_path / "p.json"
    where.write_text((EXAMPLES / "dns-server.json").read_text())
    result = service.export(compiled("dns-server.json"), fake, tmp_path / "out", where,
                            ctkit=("/usr/bin/ctkit",), host=NEW)
    assert fake.calls == [("boot_files", str(where))]
    assert result.files[0].name == "ctkit.fake" and result.files[0].install == "wherever fakes go"
    assert f"ExecStart=/usr/bin/ctkit apply {where} --backend fake" in \
        (tmp_path / "out" / "ctkit-ctkit.service").read_text().split("\n")
    assert any("a reboot empties that place" in n for n in result.notes) == str(where).startswith("/tmp/")


def test_cli_export_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctkit", "export", str(EXAMPLES / "blocklist-set.json"), "--dir",
                        str(tmp_path), "--backend", "iptables", "--iptables-variant", "legacy", "--json",
                        "--ctkit", "/usr/local/bin/ctkit"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [f["name"] for f in report["files"]] == ["ctkit.ipset", "ctkit.rules.v4", "ctkit.rules.v6",
                                                    "ctkit-ctkit.service"]
    assert any("ownership record" in n for n in report["notes"])
    unit = (tmp_path / "ctkit-ctkit.service").read_text()
    assert (f"ExecStart=/usr/local/bin/ctkit apply {EXAMPLES / 'blocklist-set.json'} --backend iptables "
            "--iptables-variant legacy") in unit.split("\n")


def test_cli_export_refusal_is_exit_2(tmp_path):
    (tmp_path / "ctkit.nft").symlink_to("/etc/passwd")
    r = subprocess.run([sys.executable, "-m", "ctkit", "export", str(EXAMPLES / "dns-server.json"), "--dir",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "is a symlink" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    where = tmp_path / "my policy%.json"  # a space and a specifier: quoted and escaped
    where.write_text((EXAMPLES / "dns-server.json").read_text())
    service.export(compiled("dns-server.json"), registry.get("nft"), tmp_path / "out", where, host=NEW)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "out" / "ctkit-ctkit.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
