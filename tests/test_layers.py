"""The floors of the house (docs/ARCHITECTURE.md), checked on the import graph of ctkit/.

Every import is counted, including those inside functions (ctkit imports heavy modules where they
are used), so a lazy import cannot hide an arrow that points the wrong way.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ctkit"
BACKENDS = ("ctkit.backends.nft", "ctkit.backends.iptables")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from ctkit.kernel import conntrack`
    return {m for m in out if m == "ctkit" or m.startswith("ctkit.")}


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _arrows(source: tuple[str, ...], target: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{m} -> {i}" for m, deps in GRAPH.items() if _under(m, *source)
                  for i in deps if _under(i, *target) and not _under(i, *allowed))


def test_the_graph_is_read():
    assert "ctkit.service" in GRAPH and "ctkit.backends.registry" in GRAPH
    assert "ctkit.backends.nft.backend" in GRAPH["ctkit.backends.registry"]


@pytest.mark.parametrize("source, forbidden", [
    # kernel access is backend-neutral and knows no command line, audit or policy file
    (("ctkit.kernel",), ("ctkit.backends", "ctkit.cli", "ctkit.audit", "ctkit.service", "ctkit.policy",
                         "ctkit.pipeline")),
    # load -> model -> lint -> compile never looks ahead to backends, the kernel or the audit
    (("ctkit.policy", "ctkit.compile"), ("ctkit.backends", "ctkit.kernel", "ctkit.audit", "ctkit.cli",
                                         "ctkit.service")),
    # backends are called by the service, the audit and the CLI, never the other way round
    (("ctkit.backends",), ("ctkit.cli", "ctkit.service", "ctkit.audit.run", "ctkit.audit.metrics",
                           "ctkit.audit.report")),
    # the service returns results; printing them is the CLI's job
    (("ctkit.service", "ctkit.audit"), ("ctkit.cli",)),
])
def test_no_arrow_points_the_wrong_way(source, forbidden):
    assert _arrows(source, forbidden) == []


def test_only_the_registry_names_a_backend_package():
    outside = [m for m in GRAPH if not _under(m, *BACKENDS) and m != "ctkit.backends.registry"]
    assert sorted(f"{m} -> {i}" for m in outside for i in GRAPH[m] if _under(i, *BACKENDS)) == []


def test_backends_do_not_import_each_other():
    assert _arrows(("ctkit.backends.nft",), ("ctkit.backends.iptables",)) == []
    assert _arrows(("ctkit.backends.iptables",), ("ctkit.backends.nft",)) == []


def test_nothing_outside_the_registry_compares_a_backend_name():
    """`if backend == "iptables"` outside the registry is a seam that leaks."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if _under(module, *BACKENDS) or module == "ctkit.backends.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                if any(isinstance(v, ast.Constant) and v.value in ("nft", "iptables") for v in values):
                    found.append(f"{module}:{node.lineno}")
    assert found == []


def test_no_test_module_basename_is_used_twice():
    """pytest imports tests/ and integration/ modules by basename: two of one name break collection."""
    root = PACKAGE.parent
    names = [p.name for d in ("tests", "integration", "ansible/tests") for p in (root / d).glob("*.py")
             if p.name != "conftest.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_no_test_imports_from_a_conftest():
    """integration/ and ansible/tests each have a conftest.py, and both are imported as `conftest`:
    the last one loaded wins, so `from conftest import X` reads the wrong one under `make test`."""
    root = PACKAGE.parent
    offenders = [str(p.relative_to(root)) for d in ("tests", "integration", "ansible/tests")
                 for p in (root / d).rglob("*.py")
                 if re.search(r"^\s*(from conftest import|import conftest)", p.read_text(), re.M)]
    assert offenders == []
