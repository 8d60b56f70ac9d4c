"""The backend seam without a kernel: a fake backend that records its calls drives ctkit/service.py
and the CLI. It lives here, in its own class, and is registered like a real one: if the service or
the CLI needed to know which backend they have, these tests could not pass."""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field, replace

import pytest
from typer.testing import CliRunner

from ctkit import lock, pipeline, service
from ctkit.audit import run
from ctkit.audit.drift import RuleView, TableView
from ctkit.backends import base, registry
from ctkit.backends.iptables.backend import IptablesBackend
from ctkit.backends.nft.backend import NftBackend
from ctkit.cli import app
from ctkit.errors import KernelError, UsageError
from ctkit.kernel import settings
from ctkit.members import SetType

POLICY = {
    "version": 1, "toggles": {"maint": False}, "sets": {"blocked": {"type": "ipv4_addr"}},
    "chains": {"input": {"policy": "drop", "rules": [
        {"name": "maint", "when": "maint", "protocol": "tcp", "dport": 80, "action": "drop"},
        # untracked too: IPv6 neighbour discovery (else the policy has a lint warning)
        {"name": "established", "ct_state": ["established", "related", "untracked"], "action": "accept"},
        {"name": "web", "protocol": "tcp", "dport": 80, "action": "accept"},
    ]}},
}


def _view(plan) -> TableView:
    return TableView(True, {c.name: c.name for c in plan.table.chains},
                     {c.name: [RuleView(c.name, r.id, r.id, r.id) for r in c.rules] for c in plan.table.chains})


@dataclass
class FakeBackend:
    """A backend whose "kernel" is a dict per namespace; every call is recorded."""
    name: str = "fake"
    formats: tuple[str, ...] = ("text", "ids")
    calls: list[tuple] = field(default_factory=list)
    kernel: dict = field(default_factory=dict)  # netns -> {"plan", "toggles", "members"}

    def owned(self, table):
        return f"fake table {table}"

    def generate(self, plan):
        return [r.id for c in plan.table.chains for r in c.rules]

    def render(self, plan, fmt, family=None, source=None):
        self.calls.append(("render", fmt, family, source))
        if fmt not in self.formats:
            raise UsageError(f"unknown format {fmt!r}")
        return "\n".join(self.generate(plan)) + "\n"

    def changes(self, plan, netns):
        self.calls.append(("changes", netns))
        state = self.kernel.get(netns)
        want, have = self.generate(plan), self.generate(state["plan"]) if state else None
        if want == have:
            return base.Pending("fake table", (), base.NONE, "", repr(have))
        items = tuple(base.PlanItem("rule", "add", r, None, r) for r in want if r not in (have or ()))
        return base.Pending("fake table", items, base.CREATE if have is None else base.INCREMENTAL, "", repr(have))

    def generation(self, netns):
        return None

    def apply(self, plan, netns, dry_run=False, pending=None):
        self.calls.append(("apply", netns, dry_run, {t.name: t.on for t in plan.table.toggles}))
        if not dry_run:
            self.kernel[netns] = {"plan": plan, "toggles": {t.name: (t.on, t.policy_on) for t in plan.table.toggles},
                                  "members": set()}
        return base.Applied(f"fake table {plan.table.name}", {"fake": True, "netns": netns},
                            ("a foreign thing was left alone\x1b[31m",))

    def snapshot(self, table, netns):
        return json.dumps(self.generate(self.kernel[netns]["plan"]) if netns in self.kernel else None)

    def restore(self, table, snapshot, netns):
        self.calls.append(("restore", table, netns))
        return "fake restored"

    def present(self, table, netns):
        return netns in self.kernel

    def remove(self, table, netns):
        self.calls.append(("remove", table, netns))
        had = self.kernel.pop(netns, None) is not None
        return base.Removed(had, "removed" if had else "nothing to remove")

    def show(self, table, netns):
        self.calls.append(("show", table, netns))
        state = self.kernel.get(netns)
        if state is None:
            return base.Shown(False, "", "nothing here", {"present": False})
        return base.Shown(True, "\n".join(self.generate(state["plan"])) + "\n", "nothing here",
                          {"present": True}, dict(state["toggles"]))

    def toggle_states(self, table, netns):
        self.calls.append(("toggle_states", table, netns))
        return dict(self.kernel.get(netns, {}).get("toggles", {}))

    def set_toggle(self, table, name, on, netns):
        self.calls.append(("set_toggle", table, name, on, netns))
        toggles = self.kernel[netns]["toggles"]
        if name not in toggles:
            raise UsageError(f"no toggle {name!r}")
        toggles[name] = (on, toggles[name][1])
        return f"fake toggle {name}"

    def member_type(self, table, name, netns):
        self.calls.append(("member_type", table, name, netns))
        return SetType(("ipv4_addr",), False, name)

    def set_member(self, table, name, member, add, timeout, netns):
        self.calls.append(("set_member", table, name, member.text(), add, timeout, netns))
        (self.kernel[netns]["members"].add if add else self.kernel[netns]["members"].discard)(member.text())
        return f"fake set {name}"

    def inspect(self, plan, netns):
        self.calls.append(("inspect", netns))
        state = self.kernel.get(netns)
        have = _view(state["plan"]) if state else TableView(False)
        return base.Inspection((base.LiveView("fake", "unit ", _view(plan), have),))

    def rule_hits(self, table, netns):
        return {}

    def load_boot(self, table, directory, netns):
        return ()

    def boot_files(self, plan, source):
        self.calls.append(("boot_files", source))
        return {f"{plan.table.name}.fake": f"{base.BOOT_INSTALL}wherever fakes go\n"
                                          + "\n".join(self.generate(plan)) + "\n"}


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(POLICY))
    return path


@pytest.fixture
def fake(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setitem(registry._FACTORIES, "fake", lambda variant: backend)
    return backend


@pytest.fixture(autouse=True)
def quiet_host(monkeypatch, tmp_path):
    """Host settings and conntrack figures come from the kernel, not from a backend: fixed answers here
    (no root, and namespace "lab" need not exist)."""
    figures = run.HostFigures(count=0, maximum=65536, buckets=16384, max_writable=True, expect_max=256,
                              helper_sysctl="0")
    monkeypatch.setattr(run, "read_figures", lambda netns: figures)
    monkeypatch.setattr(run, "read_settings", lambda settings, netns: [])
    monkeypatch.setattr(settings, "apply_settings", lambda settings, netns, dry_run=False: [])
    monkeypatch.setenv("CTKIT_STATE_DIR", str(tmp_path / "state"))  # the change lock (ctkit/lock.py)
    monkeypatch.setattr(lock, "netns_id", lambda netns: f"test-{netns}")


def test_every_backend_implements_the_whole_protocol():
    wanted = {n: inspect.signature(f) for n, f in vars(base.Backend).items()
              if callable(f) and not n.startswith("_")}
    assert {"generate", "render", "apply", "remove", "show", "toggle_states", "set_toggle", "member_type",
            "set_member", "inspect", "rule_hits", "owned"} <= set(wanted)
    for cls in (NftBackend, IptablesBackend, FakeBackend):
        for name, sig in wanted.items():
            have = inspect.signature(getattr(cls, name))
            assert list(have.parameters) == list(sig.parameters), (cls.__name__, name)
        assert cls.name and cls.formats


def test_registry_names_and_refuses_unknown():
    assert registry.NAMES == ("nft", "iptables")
    assert isinstance(registry.get("nft"), NftBackend)
    ipt = registry.get("iptables", "legacy")
    assert isinstance(ipt, IptablesBackend) and ipt.variant == "legacy"
    with pytest.raises(UsageError, match="unknown backend 'pf' \\(valid: nft, iptables\\)"):
        registry.get("pf")


def test_apply_keeps_live_toggles_and_reports(policy_file, fake):
    compiled = pipeline.compile_file(policy_file)
    first = service.apply(compiled, fake, netns="lab")
    assert first.toggles == {"maint": (False, False)} and first.summary == "fake table ctkit"
    reported = first.as_dict()
    assert reported.pop("plan")["method"] == "create"
    assert reported == {"fake": True, "netns": "lab", "changed": True, "settings": []}
    assert service.toggle(fake, "maint", True, netns="lab").as_dict() == {
        "toggle": "maint", "on": True, "where": "fake toggle maint", "netns": "lab"}
    again = service.apply(compiled, fake, netns="lab")  # the file did not change: the live state stays
    assert again.toggles == {"maint": (True, False)}
    assert fake.calls[-1] == ("apply", "lab", False, {"maint": True})
    dry = service.apply(compiled, fake, netns="other", dry_run=True)
    assert dry.dry_run and "other" not in fake.kernel


def test_set_member_parses_with_the_kernel_type_before_the_backend_sees_it(policy_file, fake):
    service.apply(pipeline.compile_file(policy_file), fake, netns="lab")
    result = service.set_member(fake, "blocked", "192.0.2.7", True, timeout=30, netns="lab")
    assert result.where == "fake set blocked" and fake.kernel["lab"]["members"] == {"192.0.2.7"}
    assert fake.calls[-2:] == [("member_type", "ctkit", "blocked", "lab"),
                               ("set_member", "ctkit", "blocked", "192.0.2.7", True, 30, "lab")]
    calls = len(fake.calls)
    with pytest.raises(UsageError):
        service.set_member(fake, "blocked", "example.com", True, netns="lab")  # never a name lookup
    with pytest.raises(UsageError):
        service.set_member(fake, "Bad-Name", "192.0.2.7", True, netns="lab")
    assert len(fake.calls) == calls + 1  # the bad name never reached the backend


def test_audit_reports_drift_through_the_views_the_backend_gives(policy_file, fake):
    compiled = pipeline.compile_file(policy_file)
    absent = service.audit(compiled, fake, netns="lab")
    assert [(d.kind, d.subject) for d in absent.drift] == [("missing-table", "unit fake")]
    assert absent.owned == "fake table ctkit" and absent.exit_code == 1
    service.apply(compiled, fake, netns="lab")
    clean = service.audit(compiled, fake, netns="lab")
    assert clean.drift == [] and clean.backend == "fake"
    service.toggle(fake, "maint", True, netns="lab")
    switched = service.audit(compiled, fake, netns="lab")
    assert [f.id for f in switched.findings] == ["toggles.switched"]
    fake.kernel["lab"]["plan"] = replace(compiled.plan, table=replace(compiled.plan.table, chains=()))
    drifted = service.audit(compiled, fake, netns="lab")
    assert [(d.kind, d.subject) for d in drifted.drift] == [("missing-chain", "unit input")]


def test_the_cli_prints_what_the_service_returns(policy_file, fake):
    cli = CliRunner()

    def ctkit(*args):
        return cli.invoke(app, list(args))

    r = ctkit("compile", str(policy_file), "-b", "fake")
    assert r.exit_code == 0 and r.stdout.splitlines() == ["maint", "established", "web"]
    assert fake.calls[-1] == ("render", "text", None, "p.json")
    assert ctkit("compile", str(policy_file), "-b", "fake", "-o", "nft").exit_code == 2
    r = ctkit("apply", str(policy_file), "-b", "fake", "-n", "lab")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("applied: fake table ctkit in netns lab\n  toggle maint: off (policy file: off)\n")
    assert "warning: a foreign thing was left alone\\x1b[31m" in r.stderr  # escaped, never sent raw
    r = ctkit("apply", str(policy_file), "-b", "fake", "-n", "lab", "--json")
    assert json.loads(r.stdout) == {"fake": True, "netns": "lab", "changed": False, "settings": [],
                                    "plan": {"items": [], "method": "none", "reason": None, "where": "fake table"}}
    assert ctkit("toggle", "maint", "on", "-b", "fake", "-n", "lab").stdout == "toggle maint: on (fake toggle maint, netns lab)\n"
    r = ctkit("show", "-b", "fake", "-n", "lab")
    assert r.stdout == ("maint\nestablished\nweb\n# toggles\n"
                        "  toggle maint: on (policy file: off)\n")
    assert json.loads(ctkit("show", "-b", "fake", "-n", "lab", "--json").stdout) == {
        "version": 1, "backend": "fake", "netns": "lab", "table": "ctkit", "owned": "fake table ctkit",
        "present": True, "rules": [], "toggles": {"maint": {"on": True, "policy": False}}, "warnings": []}
    assert ctkit("set", "add", "blocked", "192.0.2.9", "-b", "fake", "-n", "lab").stdout == \
        "added 192.0.2.9 to fake set blocked (netns lab)\n"
    assert ctkit("toggle", "nosuch", "on", "-b", "fake", "-n", "lab").exit_code == 2
    assert ctkit("remove", "-b", "fake", "-n", "lab").stdout == "removed\n"
    assert ctkit("show", "-b", "fake", "-n", "lab").stdout == "nothing here\n"


def test_the_audit_reports_a_policy_warning_once(tmp_path, fake):
    """A helper for every address is a lint warning and a health concern: one finding, with its own id."""
    path = tmp_path / "ftp.json"
    path.write_text(json.dumps({"version": 1, "helpers": [
        {"name": "ftp", "helper": "ftp", "protocol": "tcp", "ports": 21}]}))
    compiled = pipeline.compile_file(path)
    service.apply(compiled, fake, netns="lab")
    report = service.audit(compiled, fake, netns="lab")
    found = [f for f in report.findings if "every destination address" in f.message]
    assert [(f.id, f.severity, f.subject) for f in found] == [("helpers.all-addresses", "warning", "/helpers/0")]


def test_a_change_waits_for_the_one_holding_the_lock_and_names_it_when_it_gives_up(policy_file, fake):
    import threading
    compiled = pipeline.compile_file(policy_file)
    service.apply(compiled, fake, netns="lab")
    entered, release = threading.Event(), threading.Event()
    slow_apply = fake.apply

    def holding_apply(plan, netns, dry_run=False, pending=None):
        entered.set()
        release.wait(5)
        return slow_apply(plan, netns, dry_run, pending)

    fake.apply = holding_apply
    worker = threading.Thread(target=service.apply, args=(compiled, fake, "lab"))
    worker.start()
    try:
        assert entered.wait(5)
        with pytest.raises(KernelError, match=r"still running after 0.2 s \(pid \d+: ctkit apply"):
            with lock.change("lab", "ctkit", "toggle maint", timeout=0.2):
                pass
        assert service.apply(compiled, fake, netns="lab", dry_run=True).dry_run  # a dry run does not wait
    finally:
        release.set()
        worker.join(5)
    service.toggle(fake, "maint", True, netns="lab")  # free again
    assert fake.kernel["lab"]["toggles"]["maint"] == (True, False)
