"""Fleet push with the Ansible collection: one policy to N namespace hosts, then the same push again.

    sudo .venv/bin/python benchmarks/ansible_fleet.py [--hosts 50] [--forks 10] [--policy FILE] [--cli]

Builds N network namespaces (ansible/tests/fleet.py: local connection, the modules' netns option,
this Python as the interpreter), runs ansible-playbook with ansible/tests/playbooks/push.yml twice
(first push: every host changes; re-push of the unchanged policy: no host changes, nothing is sent
to any kernel) and prints the wall time of each run and per-host figures of the push task (from
dispatch to result, ansible/tests/plugins/callback/ctkit_record.py). --cli also times `ctkit apply`
of the same policy to every namespace, one after the other, as a baseline without Ansible.
The namespaces are removed at the end.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ansible" / "tests"))

from fleet import VENV_BIN, Fleet  # noqa: E402


def figures(run, task: str = "push") -> dict:
    results = [r for r in run.records if r["task"] == task]
    seconds = sorted(r["seconds"] for r in results if r["seconds"] is not None)
    return {
        "wall": run.seconds,
        "hosts": len(results),
        "changed": sum(1 for r in results if r["result"].get("changed")),
        "failed": sum(1 for r in results if r["status"] != "ok"),
        "median": statistics.median(seconds),
        "p90": seconds[int(0.9 * (len(seconds) - 1))],
        "max": seconds[-1],
        "min": seconds[0],
    }


def row(name: str, f: dict) -> str:
    return (f"| {name:<28} | {f['wall']:7.1f} | {f['hosts']:5d} | {f['changed']:7d} | {f['failed']:6d} | "
            f"{f['min']:6.2f} | {f['median']:6.2f} | {f['p90']:6.2f} | {f['max']:6.2f} | {f['wall'] / f['hosts']:8.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--policy", default=str(ROOT / "examples" / "web-server-notrack.json"))
    parser.add_argument("--cli", action="store_true", help="also time `ctkit apply` per namespace, sequentially")
    args = parser.parse_args()
    policy = str(Path(args.policy).resolve())
    with tempfile.TemporaryDirectory(prefix="ctkit-fleet-") as tmp, Fleet(args.hosts) as fleet:
        tmp_path = Path(tmp)
        inv = fleet.inventory(tmp_path / "inventory.yml", policy_src=policy)
        print(f"{args.hosts} namespace hosts, forks {args.forks}, policy {Path(policy).name}", flush=True)
        push = fleet.playbook(tmp_path, "push.yml", inventory=inv, forks=args.forks, timeout=1800)
        if push.returncode != 0:
            print(push.stdout[-3000:], push.stderr[-3000:])
            return 1
        again = fleet.playbook(tmp_path, "push.yml", inventory=inv, forks=args.forks, timeout=1800)
        if again.returncode != 0:
            print(again.stdout[-3000:], again.stderr[-3000:])
            return 1
        print("| run                          | wall s  | hosts | changed | failed | min s  | median | p90 s  "
              "| max s  | wall/host |")
        print("|------------------------------|---------|-------|---------|--------|--------|--------|--------"
              "|--------|-----------|")
        first, second = figures(push), figures(again)
        print(row("push (every host changes)", first))
        print(row("re-push, unchanged", second))
        if args.cli:
            for ns in fleet.hosts.values():
                subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "ctkit"],
                               capture_output=True)
            start = time.monotonic()
            times = []
            for ns in fleet.hosts.values():
                t = time.monotonic()
                subprocess.run([str(VENV_BIN / "ctkit"), "apply", policy, "--netns", ns], check=True,
                               capture_output=True)
                times.append(time.monotonic() - t)
            wall = time.monotonic() - start
            times.sort()
            print(f"| {'ctkit apply CLI, sequential':<28} | {wall:7.1f} | {len(times):5d} | {len(times):7d} | "
                  f"{0:6d} | {times[0]:6.2f} | {statistics.median(times):6.2f} | "
                  f"{times[int(0.9 * (len(times) - 1))]:6.2f} | {times[-1]:6.2f} | {wall / len(times):8.2f} |")
        assert first["changed"] == args.hosts and second["changed"] == 0, (first, second)
    return 0


if __name__ == "__main__":
    sys.exit(main())
