"""A fleet of Ansible hosts that are network namespaces on this machine, and ansible-playbook runs on it.

Every host is a namespace this module creates (named ctans-<pid>-<n>-<host>) and removes when the
Fleet closes, even when the test fails; the host's own namespace is never touched. Hosts are managed
with a local connection and the modules' `netns` option, the interpreter being this Python (the
virtualenv that has ctkit). With `linked=True` a control namespace is linked to every host by a veth
pair (control 10.77.N.1, host 10.77.N.2) and the hosts use the ctkit_probed_local connection
(plugins/connection/): a command reaches a host only while a TCP attempt from the control side gets
through, as with SSH.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ANSIBLE_DIR = HERE.parent  # ansible.cfg and ansible_collections/ are here
PLAYBOOKS = HERE / "playbooks"
FILES = HERE / "files"
VENV_BIN = Path(sys.executable).parent
_count = itertools.count()


def sh(*argv: str, ns: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Run:
    """One ansible-playbook run: its exit code, output and every task result (ctkit_record callback)."""
    returncode: int
    stdout: str
    stderr: str
    records: list[dict]
    seconds: float

    def results(self, task: str) -> dict[str, dict]:
        """host -> the result of the task named `task` (the last one, if it ran more than once)."""
        return {r["host"]: {**r["result"], "_status": r["status"]} for r in self.records if r["task"] == task}


@dataclass
class Fleet:
    size: int
    linked: bool = False
    prefix: str = field(default_factory=lambda: f"ctans-{os.getpid()}-{next(_count)}-{uuid.uuid4().hex[:4]}")
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> namespace
    control: str | None = None
    made: list[str] = field(default_factory=list)

    def __enter__(self) -> Fleet:
        try:
            if self.linked:
                self.control = self._netns("ctl")
            for i in range(1, self.size + 1):
                name = f"h{i}"
                ns = self._netns(name)
                self.hosts[name] = ns
                sh("ip", "link", "set", "lo", "up", ns=ns)
                if self.linked:
                    self._link(i, ns)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _netns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        return ns

    def _link(self, i: int, ns: str) -> None:
        # created inside the control namespace, one end moved to the host: nothing in the host's namespace
        ctl, peer = f"c{i}", f"p{i}"
        sh("ip", "link", "add", ctl, "type", "veth", "peer", "name", peer, ns=self.control)
        sh("ip", "link", "set", peer, "netns", ns, ns=self.control)
        sh("ip", "addr", "add", f"10.77.{i}.1/24", "dev", ctl, ns=self.control)
        sh("ip", "link", "set", ctl, "up", ns=self.control)
        sh("ip", "link", "set", "lo", "up", ns=self.control)
        sh("ip", "addr", "add", f"10.77.{i}.2/24", "dev", peer, ns=ns)
        sh("ip", "link", "set", peer, "up", ns=ns)

    def address(self, host: str) -> str:
        return f"10.77.{int(host[1:])}.2"

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()

    # ------------------------------------------------------------- ansible

    def inventory(self, path: Path, hostvars: dict[str, dict] | None = None, **allvars) -> Path:
        hosts = {}
        for name, ns in self.hosts.items():
            v = {"netns": ns}
            if self.linked:
                v.update(ansible_host=self.address(name), ansible_connection="ctkit_probed_local")
            v.update((hostvars or {}).get(name, {}))
            hosts[name] = v
        data = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                 **allvars}, "hosts": hosts}}
        path.write_text(yaml.safe_dump(data))
        return path

    def playbook(self, tmp: Path, playbook: str | Path, *args: str, inventory: Path | None = None,
                 forks: int | None = None, timeout: float = 300, env: dict | None = None) -> Run:
        inventory = inventory or self.inventory(tmp / "inventory.yml")
        record = tmp / f"record-{next(_count)}.jsonl"
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / playbook
                                                                               if isinstance(playbook, str) else playbook)]
        cmd += ["--forks", str(forks or min(10, max(2, self.size)))] + list(args)
        return run_ansible(cmd, tmp, record, timeout, {**(env or {}), **(
            {"CTKIT_PROBE_NETNS": self.control} if self.control else {})})

    # -------------------------------------------------------------- kernel

    def nft(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("nft", *args, ns=self.hosts[host], check=check)

    def table(self, host: str) -> dict | None:
        """ctkit's table as libnftables JSON with handles, or None when absent."""
        proc = self.nft(host, "-a", "-j", "list", "table", "inet", "ctkit", check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def rule_comments(self, host: str) -> list[str]:
        table = self.table(host) or {"nftables": []}
        return [i["rule"].get("comment", "") for i in table["nftables"] if "rule" in i]


def ansible_env(tmp: Path, record: Path | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ANSIBLE_DIR),
        "ANSIBLE_CONNECTION_PLUGINS": str(HERE / "plugins" / "connection"),
        "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "plugins" / "callback"),
        "ANSIBLE_CALLBACKS_ENABLED": "ctkit_record",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_ASYNC_DIR": str(tmp / "ansible-async"),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    if record is not None:
        env["CTKIT_RECORD"] = str(record)
    env.update(extra or {})
    return env


def run_ansible(cmd: list[str], tmp: Path, record: Path, timeout: float, env: dict | None = None) -> Run:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ANSIBLE_DIR, timeout=timeout,
                          env=ansible_env(tmp, record, env))
    seconds = time.monotonic() - start
    records = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return Run(proc.returncode, proc.stdout, proc.stderr, records, seconds)
