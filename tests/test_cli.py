"""The command line as a user meets it: exit codes, messages, no tracebacks (no root needed)."""
import json
import subprocess
import sys

from goldens import ROOT


def ctkit(*args, input=None):
    return subprocess.run([sys.executable, "-m", "ctkit", *args], capture_output=True, text=True,
                          cwd=ROOT, input=input, timeout=60)


def test_validate_examples_ok():
    r = ctkit("validate", *[str(p) for p in sorted((ROOT / "examples").glob("*.json"))])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok (") == len(list((ROOT / "examples").glob("*.json")))


def test_validate_reports_every_problem_with_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntable: ctkit\nchains:\n  input:\n    policy: maybe\n    rules:\n"
                   "      - jump: nowhere\n      - saddr: 10.0.0.1/8\n")
    r = ctkit("validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:5: error: /chains/input/policy: 'maybe' is not allowed" in r.stderr
    assert f"{bad}:8: error: /chains/input/rules/1/saddr: '10.0.0.1/8' has host bits set" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_lint_errors_exit_2_and_json(tmp_path):
    bad = tmp_path / "loop.json"
    bad.write_text(json.dumps({"version": 1, "chains": {"input": {"rules": [{"jump": "a"}]},
                                                        "a": {"rules": [{"jump": "a"}]}}}))
    r = ctkit("validate", "--json", str(bad))
    assert r.returncode == 2
    (report,) = json.loads(r.stdout)
    assert report["valid"] is False
    assert report["problems"][0]["message"] == "jump loop: a -> a"


def test_compile_formats():
    policy = str(ROOT / "examples" / "dns-server.json")
    doc = json.loads(ctkit("compile", policy).stdout)
    assert doc["nftables"][1] == {"add": {"table": {"family": "inet", "name": "ctkit"}}}
    text = ctkit("compile", policy, "--format", "nft").stdout
    assert "chain notrack-pre {" in text and "notrack comment" in text
    plan = json.loads(ctkit("compile", policy, "--format", "plan").stdout)
    assert {s["sysctl"] for s in plan["settings"]} >= {"net.netfilter.nf_conntrack_helper"}
    r = ctkit("compile", policy, "--format", "xml")
    assert r.returncode == 2 and "unknown format" in r.stderr


def test_unknown_backend_and_missing_file():
    r = ctkit("compile", str(ROOT / "examples" / "dns-server.json"), "--backend", "pf")
    assert r.returncode == 2 and "unknown backend 'pf'" in r.stderr
    r = ctkit("validate", "/nonexistent/policy.json")
    assert r.returncode == 2 and "cannot read file" in r.stderr


def test_unknown_namespace_is_invalid_input():
    r = ctkit("show", "--netns", "ctkit-no-such-namespace")
    assert r.returncode == 2
    assert "network namespace 'ctkit-no-such-namespace' does not exist" in r.stderr


def _options(command, path=()):
    """(command path, option) for every option of every command of the typer app."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
        return
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            yield " ".join(path), param


def test_every_short_flag_means_one_thing_across_the_whole_cli():
    import typer

    from ctkit.cli import app
    meaning: dict[str, set[str]] = {}
    for _path, opt in _options(typer.main.get_command(app)):
        longs = [o for o in opt.opts if o.startswith("--")] or ["?"]
        for short in (o for o in opt.opts if len(o) == 2):
            meaning.setdefault(short, set()).add(longs[0])
    assert {s: m for s, m in meaning.items() if len(m) > 1} == {}
    # the ones an administrator knows from conntrack(8) and ip(8) keep that meaning
    assert meaning["-f"] == {"--family"} and meaning["-p"] == {"--proto"} and meaning["-n"] == {"--netns"}
    assert meaning["-b"] == {"--backend"} and meaning["-o"] == {"--format"}


def test_version():
    r = ctkit("--version")
    assert r.returncode == 0 and r.stdout.startswith("ctkit ")


def test_contradictory_output_flags_are_an_error():
    r = ctkit("ct", "list", "--json", "--format", "conntrack")
    assert r.returncode == 2 and "--json and --format conntrack contradict each other" in r.stderr
