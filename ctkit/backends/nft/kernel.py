"""nftables through libnftables (the pip-nftables bindings), inside a namespace.

A libnftables context holds a netlink socket bound to the namespace it was
created in, so every function here creates its context after entering the
target namespace and never keeps it.

Apply replaces ctkit's table in one transaction: `add table` (so the next
command cannot fail on a missing table), `delete table`, then the whole new
table, all in one libnftables batch, sent in nft syntax (see apply). The kernel sees the old table or the new
one, never a mix and never an empty window; no other table is touched.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from typing import Any

from ctkit import names
from ctkit.backends.nft import text as nft_text
from ctkit.backends.nft.table import FAMILY, toggle_element_commands
from ctkit.errors import KernelError, UsageError
from ctkit.kernel.netns import entered
from ctkit.ownership import check_table


def _context():
    try:
        import nftables
    except ImportError:  # pragma: no cover - install problem
        raise KernelError("the libnftables Python bindings are missing (pip install pip-nftables; "
                          "apt-get install libnftables1)") from None
    try:
        ctx = nftables.Nftables()
    except OSError as exc:
        raise KernelError(f"cannot load libnftables: {exc} (apt-get install libnftables1)") from None
    ctx.set_json_output(True)
    ctx.set_handle_output(False)
    return ctx


def _set_dry_run(ctx, on: bool) -> None:
    """Check mode: the kernel validates the batch and commits nothing (nft --check).

    pip-nftables 1.0.2 has no set_dry_run(); libnftables itself has had
    nft_ctx_set_dry_run() since 0.9, so call it on the binding's context.
    """
    if hasattr(ctx, "set_dry_run"):
        ctx.set_dry_run(on)
        return
    import ctypes
    lib = ctypes.CDLL("libnftables.so.1")
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_ctx_set_dry_run(ctx._Nftables__ctx, on)


def _run_json(ctx, document: dict, what: str) -> None:
    rc, _out, error = ctx.json_cmd(document)
    if rc != 0:
        rules = _refused_in_batch(document, _clean(error).split("\n")[0])
        where = f" at rule {', '.join(rules)}" if rules else ""
        raise KernelError(f"{what} refused by the kernel{where}: {_clean(error)}")


def _refused_in_batch(document: dict, first_line: str, most: int = 200) -> list[str]:
    """The policy rules of a refused JSON batch that the kernel refuses alone, each checked in its own
    dry-run batch (a JSON error names no command); best effort, and only for small batches."""
    commands = [c for c in document.get("nftables", []) if any(
        k in c and "rule" in c[k] for k in ("add", "insert", "replace"))]
    if len(commands) > most:
        return []
    found = []
    ctx = _context()
    _set_dry_run(ctx, True)
    for c in commands:
        rc, _out, error = ctx.json_cmd({"nftables": [c]})
        body = next(iter(c.values()))["rule"]
        rid = names.rule_id(body.get("comment") or "")
        if rc != 0 and _clean(error).split("\n")[0] == first_line and rid and rid not in found:
            found.append(rid)
    return found


def _clean(error: Any) -> str:
    text = error if isinstance(error, str) else json.dumps(error)
    text = text.strip().replace("internal:0:0-0: ", "") or "no message (are you root?)"
    if "Operation not permitted" in text:
        text += " (needs CAP_NET_ADMIN: run as root)"
    return text


def apply(table: str, document: dict, netns: str | None = None, dry_run: bool = False,
          text: str | None = None) -> None:
    """Atomically replace ctkit's table with the one `document` creates.

    The document is sent in nft syntax (text.render: the add/delete prelude, then the whole table),
    one transaction like the JSON would be: libnftables parses that text two to three times faster
    than the same commands as JSON (10,000 rules: about 0.19 s against 0.35-0.57 s, and no
    json.dumps in Python; benchmarks/bench_apply.py), and 1.0.6 reads a ct timeout's "policy" from
    JSON inverted and drops it (json_parse_ct_timeout_policy), which the text keeps. The printer
    refuses (CompileError) an expression it has no syntax for, before anything is sent. `text`: the
    document already rendered (the backend renders it once for the plan's digest)."""
    check_table(table)
    if any(_target(c) != (FAMILY, table) for c in document["nftables"] if "metainfo" not in c):
        raise KernelError(f"internal error: the document for table {FAMILY} {table} names another table")
    if text is None:
        text = nft_text.render(document)
    with entered(netns):
        ctx = _context()
        _set_dry_run(ctx, dry_run)
        _run_text(ctx, text, "dry run" if dry_run else "apply")


def apply_batch(table: str, batch: dict, netns: str | None = None, dry_run: bool = False) -> None:
    """Send one incremental batch (backends/nft/diff.py) for ctkit's table: one transaction, like apply."""
    check_table(table)
    if any(_target(c) != (FAMILY, table) for c in batch["nftables"]):
        raise KernelError(f"internal error: an incremental batch for table {FAMILY} {table} names another table")
    with entered(netns):
        ctx = _context()
        _set_dry_run(ctx, dry_run)
        _run_json(ctx, batch, "dry run" if dry_run else "apply")


def _target(command: dict) -> tuple[str | None, str | None]:
    (_verb, obj), = command.items()
    (kind, body), = obj.items()
    return body.get("family"), body.get("name" if kind == "table" else "table")


def restore_text(table: str, text: str, netns: str | None = None) -> None:
    """Put back a table saved as `nft list table` text ("": the table did not exist): one transaction."""
    check_table(table)
    if not text.strip():
        delete_table(table, netns)
        return
    with entered(netns):
        ctx = _context()
        _run_text(ctx, f"table {FAMILY} {table}\ndelete table {FAMILY} {table}\n{text}", "rollback")


def load_text(text: str, netns: str, what: str) -> None:
    """Load nft syntax as `nft -f` does (a boot file, into a scratch namespace)."""
    with entered(netns):
        _run_text(_context(), text, what)


def _run_text(ctx, text: str, what: str) -> None:
    ctx.set_json_output(False)
    rc, _out, error = ctx.cmd(text)
    if rc != 0:
        rules = _refused_rules(text)
        where = f" at rule {', '.join(rules)}" if rules else ""
        hint = (" (this kernel lacks an expression the rule needs, e.g. nft queue without CONFIG_NFT_QUEUE: "
                "change the rule or use the iptables backend)" if rules and "No such file or directory" in
                str(error) else "")
        # libnftables shows the buffer's first line under the error: once the rule is known, only the message
        message = _clean(error).split("\n")[0] if rules else _clean(error)
        raise KernelError(f"{what} refused by the kernel{where}: {message}{hint}")


_COMMENT = re.compile(r'comment "((?:[^"\\]|\\.)*)"')


def _refused_rules(text: str) -> list[str]:
    """The policy rules on the lines of `text` the kernel refused. libnftables names no line for a
    command buffer (it prints the buffer's first line under the error), so the same text is checked once
    more with `nft -c -f FILE` (in the namespace already entered), which does. Best effort: [] when that
    cannot tell."""
    nft = shutil.which("nft")
    if nft is None:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".nft", prefix="ctkit-refused-") as f:
        f.write(text)
        f.flush()
        try:
            proc = subprocess.run([nft, "-c", "-f", f.name], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return []
        lines = text.split("\n")
        found = []
        for n in re.findall(re.escape(f.name) + r":(\d+):", proc.stderr):
            line = lines[int(n) - 1] if 0 < int(n) <= len(lines) else ""
            comment = _COMMENT.search(line)
            rid = names.rule_id(comment.group(1)) if comment else None
            if rid and rid not in found:
                found.append(rid)
        return found


def _list_table(table: str, netns: str | None, as_json: bool) -> str | None:
    """`list table` output (JSON or nft syntax), or None when the table does not exist."""
    check_table(table)  # the name goes into nft command text: never unchecked
    with entered(netns):
        ctx = _context()
        ctx.set_json_output(as_json)
        ctx.set_handle_output(as_json)
        rc, out, error = ctx.cmd(f"list table {FAMILY} {table}")
    if rc != 0:
        if "No such file or directory" in error:
            return None
        raise KernelError(f"cannot list table {FAMILY} {table}: {_clean(error)}")
    return out


def has_table(table: str, netns: str | None = None) -> bool:
    """Whether `table inet <table>` exists (the table names over netlink, not the table's contents)."""
    from ctkit.kernel.nf_tables import tables
    check_table(table)
    return (FAMILY, table) in tables(netns)


def list_table(table: str, netns: str | None = None) -> list[dict] | None:
    """The table as the kernel prints it (libnftables JSON objects), or None if absent."""
    out = _list_table(table, netns, as_json=True)
    return None if out is None else [item for item in json.loads(out)["nftables"] if "metainfo" not in item]


def list_table_text(table: str, netns: str | None = None) -> str | None:
    """The table in nft syntax, as `nft list table` prints it, or None if absent."""
    return _list_table(table, netns, as_json=False)


def list_ruleset(netns: str | None = None) -> list[dict]:
    with entered(netns):
        ctx = _context()
        ctx.set_handle_output(True)
        rc, out, error = ctx.cmd("list ruleset")
    if rc != 0:
        raise KernelError(f"cannot list the ruleset: {_clean(error)}")
    return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]


def list_other_tables(table: str, netns: str | None = None) -> list[dict]:
    """Every table of the namespace but ctkit's `inet <table>`, as list_ruleset prints them (with handles):
    what the audit reads of the ruleset when ctkit's own table is known to hold what ctkit wrote. Each is
    listed by a JSON command, so another tool's table name never goes into nft's command text."""
    from ctkit.kernel.nf_tables import tables
    check_table(table)
    names = [t for t in tables(netns) if t != (FAMILY, table)]  # over netlink: libnftables' `list tables`
    if not names:                                               # fetches every table's rules first
        return []
    with entered(netns):
        ctx = _context()
        ctx.set_handle_output(True)
        items: list[dict] = []
        for family, name in names:
            rc, listed, error = ctx.json_cmd({"nftables": [{"list": {"table": {"family": family, "name": name}}}]})
            if rc != 0:
                raise KernelError(f"cannot list table {family} {name}: {_clean(error)}")
            items += [i for i in listed["nftables"] if "metainfo" not in i]
    return items


def delete_table(table: str, netns: str | None = None) -> bool:
    """Delete ctkit's table; False when there was none."""
    check_table(table)
    with entered(netns):
        ctx = _context()
        rc, _out, error = ctx.cmd(f"delete table {FAMILY} {table}")
    if rc != 0:
        if "No such file or directory" in error:
            return False
        raise KernelError(f"cannot delete table {FAMILY} {table}: {_clean(error)}")
    return True


# ----------------------------------------------------------------- toggles
# A toggle is a set of nf_proto values in ctkit's table: {ipv4, ipv6} while on, empty
# while off (ctkit/backends/nft/generate.py); rules it guards look every packet's nfproto up
# in it. Chain toggle-state holds one rule per toggle whose comment keeps the policy
# file's value ("toggle/NAME: policy on|off").

def _cmd_json(ctx, command: str) -> list[dict] | None:
    rc, out, error = ctx.cmd(command)
    if rc != 0:
        if "No such file or directory" in error:
            return None
        raise KernelError(f"{command}: {_clean(error)}")
    return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]


def toggle_states(table: str, netns: str | None = None) -> dict[str, tuple[bool, bool | None]]:
    """{toggle: (on now, the policy file's value at the last apply)}; empty without toggles."""
    check_table(table)
    out: dict[str, tuple[bool, bool | None]] = {}
    with entered(netns):
        ctx = _context()
        items = _cmd_json(ctx, f"list chain {FAMILY} {table} {names.NFT_TOGGLE_CHAIN}")
        for item in items or []:
            marker = names.parse_toggle_comment(item.get("rule", {}).get("comment", ""))
            if marker is None:
                continue
            name, policy_on = marker
            listed = _cmd_json(ctx, f"list set {FAMILY} {table} {names.nft_toggle_set(name)}") or []
            elems = next((i["set"].get("elem", []) for i in listed if "set" in i), [])
            out[name] = (bool(elems), policy_on)
    return out


def set_toggle(table: str, name: str, on: bool, netns: str | None = None) -> None:
    """Flip one toggle: flush its set (and fill it when on) in one small transaction."""
    check_table(table)
    with entered(netns):
        ctx = _context()
        rc, _out, error = ctx.json_cmd({"nftables": toggle_element_commands(table, name, on)})
    if rc != 0:
        if "No such file or directory" in error:
            raise UsageError(f"no toggle {name!r} in table {FAMILY} {table} (apply a policy that declares it)")
        raise KernelError(f"toggle {name}: {_clean(error)}")



# -------------------------------------------------------------- named sets

def list_set(table: str, name: str, netns: str | None = None) -> list[dict] | None:
    """`list set` as libnftables JSON objects (type, flags, members), or None when there is no such set."""
    check_table(table)  # both names go into nft command text: checked first
    with entered(netns):  # the libnftables context must be created inside
        return _cmd_json(_context(), f"list set {FAMILY} {table} {name}")


def set_element(table: str, name: str, value, add: bool, timeout: int | None = None,
                netns: str | None = None) -> None:
    """Add or delete one member of a named set (value: libnftables JSON), one small transaction."""
    check_table(table)
    elem = value if timeout is None else {"elem": {"val": value, "timeout": timeout}}
    cmd = {"add" if add else "delete": {"element": {"family": FAMILY, "table": table, "name": name, "elem": [elem]}}}
    with entered(netns):
        ctx = _context()
        rc, _out, error = ctx.json_cmd({"nftables": [cmd]})
    if rc != 0:
        if "No such file or directory" in error and add:
            raise UsageError(f"no set {name!r} in table {FAMILY} {table} (apply a policy that declares it)")
        raise KernelError(f"set {name}: {_clean(error)}")
