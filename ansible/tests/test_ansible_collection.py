"""ctkit.netfilter with real ansible-playbook runs, on hosts that are network namespaces of this machine.

Hosts use a local connection and the modules' netns option (fleet.py says why); every test makes its
own namespaces and removes them. The kernel is read directly (nft) to check what the modules say.
"""
from __future__ import annotations

import subprocess
import time

import pytest
from fleet import ANSIBLE_DIR, FILES, VENV_BIN, Fleet, ansible_env, run_ansible, sh

pytestmark = pytest.mark.kernel

COLLECTION = ANSIBLE_DIR / "ansible_collections" / "ctkit" / "netfilter"
RULES = ("input/established", "input/control", "input/ssh", "input/web", "input/icmp")


def _monitor(ns: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_four_steps_on_every_host_and_the_diff(tmp_path):
    with Fleet(5) as fleet:
        inv = fleet.inventory(tmp_path / "inv.yml", policy_src=str(FILES / "web-v1.yaml"))
        first = fleet.playbook(tmp_path, "four_steps.yml", "--tags", "converge", "--diff", inventory=inv)
        assert first.returncode == 0, first.stdout + first.stderr
        for host in fleet.hosts:
            assert [c.split(": ")[0] for c in fleet.rule_comments(host)] == [r.split("/")[1] for r in RULES]
        # --diff names every rule by its policy name and pointer, on every host (check mode and apply)
        for rule in RULES:
            assert first.stdout.count(f"rule {rule}  [/chains/input/rules/") == 2 * 5, rule
        assert "+    tcp dport 22" in first.stdout

        # steps 3 and 4, with the kernel watched: no event, same handles
        tables = {h: fleet.table(h) for h in fleet.hosts}
        monitors = {h: _monitor(ns) for h, ns in fleet.hosts.items()}
        try:
            time.sleep(0.5)
            second = fleet.playbook(tmp_path, "four_steps.yml", "--tags", "reapply", inventory=inv)
            for ns in fleet.hosts.values():  # a marker proves each monitor was listening
                sh("nft", "add", "table", "inet", "ctkmark", ns=ns)
            time.sleep(0.5)
        finally:
            outputs = {}
            for h, m in monitors.items():
                m.terminate()
                outputs[h] = m.communicate(timeout=10)[0]
        assert second.returncode == 0, second.stdout + second.stderr
        for host, out in outputs.items():
            lines = [line for line in out.splitlines() if line.strip()]
            assert lines and "ctkmark" in lines[0], f"{host}: the kernel saw writes during the re-apply: {lines}"
            assert fleet.table(host) == tables[host]
        steps = second.results("step 3 apply again")
        assert len(steps) == 5 and not any(r["changed"] for r in steps.values())


def test_broken_policy_on_one_host_and_a_hand_edit(tmp_path):
    with Fleet(5) as fleet:
        good = str(FILES / "web-v1.yaml")
        inv = fleet.inventory(tmp_path / "inv.yml", {"h3": {"policy_src": str(FILES / "broken.yaml")}},
                              policy_src=good)
        # the README's fleet playbook: push, audit, fleet summary
        run = fleet.playbook(tmp_path, COLLECTION / "docs" / "fleet.yml", "-e", "target=all", inventory=inv)
        assert run.returncode == 2, run.stdout + run.stderr  # a host failed
        push = run.results("Apply the policy (check mode prints the plan; --diff shows it by policy rule)")
        assert push["h3"]["_status"] == "failed"
        msg = push["h3"]["msg"]
        assert "invalid policy, nothing applied: 2 problems" in msg
        assert f"{FILES / 'broken.yaml'}:8: error: /chains/input/rules/1/dport: 70000 is greater than" in msg
        assert f"{FILES / 'broken.yaml'}:9: error: /chains/input/rules/2/action: 'allow' is not allowed" in msg
        assert [p["line"] for p in push["h3"]["problems"]] == [8, 9]
        assert fleet.table("h3") is None  # nothing applied there
        for host in ("h1", "h2", "h4", "h5"):
            assert push[host]["_status"] == "ok" and push[host]["changed"], host
            assert fleet.table(host) is not None
        summary = run.results("Fleet-wide audit summary (hosts with drift, top findings)")["h1"]["msg"]
        assert summary["hosts"] == 4 and summary["clean"] == ["h1", "h2", "h4", "h5"] and not summary["drifted"]

        # a rule added by hand in ctkit's table on h2: reported by the audit, repaired by the policy
        fleet.nft("h2", "add", "rule", "inet", "ctkit", "input", "tcp", "dport", "9999", "accept")
        inv = fleet.inventory(tmp_path / "inv2.yml", policy_src=good, edited="h2")
        drift = fleet.playbook(tmp_path, "drift.yml", "--limit", "all:!h3", inventory=inv)
        assert drift.returncode == 0, drift.stdout + drift.stderr
        before = drift.results("audit before")
        assert [d["kind"] for d in before["h2"]["report"]["drift"]] == ["extra"]
        assert "9999" in (before["h2"]["report"]["drift"][0]["actual"] or "")
        assert before["h2"]["ansible_facts"]["ctkit_audit"]["status"] == "attention"
        assert all(before[h]["drift"] == 0 for h in ("h1", "h4", "h5"))
        assert drift.results("audit strict")["h2"]["_status"] == "failed"
        assert "1 drift item: extra" in drift.results("audit strict")["h2"]["msg"]
        summary = drift.results("fleet summary before")["h1"]["msg"]
        assert list(summary["drifted"]) == ["h2"] and summary["hosts"] == 4 and summary["attention"] == ["h2"]
        print("fleet summary with a hand edit on h2:", summary)
        assert drift.results("repair")["h2"]["changed"]
        assert not any("9999" in r for r in fleet.rule_comments("h2"))
        assert "tcp dport 9999" not in fleet.nft("h2", "list", "table", "inet", "ctkit").stdout


def test_set_members_and_toggles_are_idempotent(tmp_path):
    with Fleet(2) as fleet:
        run = fleet.playbook(tmp_path, "runtime.yml")
        assert run.returncode == 0, run.stdout + run.stderr
        for host in fleet.hosts:
            listing = fleet.nft(host, "list", "set", "inet", "ctkit", "blocklist").stdout
            assert "192.0.2.128/25" in listing and "192.0.2.7" not in listing
            assert "198.51.100.0/24" in listing  # the declared member stays


def test_lockout_rolls_back_by_itself(tmp_path):
    """confirm_within through the action plugin: h2's new policy cuts the control side's path to it,
    so the confirm from a fresh connection cannot get through; h2 puts the old policy back by itself
    and the play says so. h1 and h3 get the new policy, confirmed."""
    with Fleet(3, linked=True) as fleet:
        v1, v2 = str(FILES / "web-v1.yaml"), str(FILES / "web-v2.yaml")
        inv = fleet.inventory(tmp_path / "inv.yml", policy_src=v1)
        run = fleet.playbook(tmp_path, "push.yml", inventory=inv)
        assert run.returncode == 0, run.stdout + run.stderr
        old = {h: fleet.rule_comments(h) for h in fleet.hosts}

        inv = fleet.inventory(tmp_path / "inv2.yml", {"h2": {"policy_src": str(FILES / "lockout.yaml")}},
                              policy_src=v2, confirm_within=6)
        start = time.monotonic()
        run = fleet.playbook(tmp_path, "push.yml", inventory=inv, timeout=180)
        took = time.monotonic() - start
        push = run.results("push")
        assert run.returncode == 2, run.stdout + run.stderr
        locked = push["h2"]
        assert locked["_status"] == "failed", locked
        assert locked["rolled_back"] is True and locked["confirmed"] is False, locked
        assert "rolled itself back" in locked["msg"] and "not confirmed in time" in locked["rollback_event"]
        assert fleet.rule_comments("h2") == old["h2"]  # the kernel has the old policy again
        for host in ("h1", "h3"):
            assert push[host]["_status"] == "ok" and push[host]["confirmed"] is True, push[host]
            assert push[host]["changed"] and any(c.startswith("metrics") for c in fleet.rule_comments(host))
        time.sleep(max(0.0, 7 - took))  # past every deadline: the confirmed hosts keep the new policy
        for host in ("h1", "h3"):
            assert any(c.startswith("metrics") for c in fleet.rule_comments(host)), host


def test_missing_ctkit_on_the_target_fails_with_the_install_hint(tmp_path):
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import ctkit"], capture_output=True, cwd="/")
    if probe.returncode == 0:
        pytest.skip(f"{bare} has ctkit")
    record = tmp_path / "record.jsonl"
    cmd = [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={bare}",
           "-m", "ctkit.netfilter.conntrack_info"]
    run = run_ansible(cmd, tmp_path, record, 120)
    assert run.returncode != 0
    assert "Failed to import the required Python library (ctkit)" in run.stdout
    assert "pip install ctkit" in run.stdout and "apt-get install nftables" in run.stdout


def test_ansible_doc_renders_every_module(tmp_path):
    names = [f"ctkit.netfilter.{m}" for m in ("policy", "audit", "conntrack_info", "set", "toggle", "confirm")]
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), *names], capture_output=True, text=True, timeout=120,
                          env=ansible_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert f"> MODULE {name}" in proc.stdout, name
    assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout and "confirm_within" in proc.stdout
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "filter", "ctkit.netfilter.audit_summary"],
                          capture_output=True, text=True, timeout=60, env=ansible_env(tmp_path))
    assert proc.returncode == 0 and "audit_summary" in proc.stdout, proc.stderr
