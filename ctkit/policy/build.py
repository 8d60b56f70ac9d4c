"""Build the model (ctkit/policy/model.py) from a schema-valid document, one section builder at a time.

Every builder reports bad values to one Builder instead of raising, so a user sees all
problems of a file at once; build_policy returns a Policy only when there were none.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ctkit.errors import Problem
from ctkit.policy.build_conntrack import build_helpers, build_notrack, build_settings, build_timeouts, build_zones
from ctkit.policy.build_nat import build_nat
from ctkit.policy.build_rules import build_chains
from ctkit.policy.build_sets import build_sets
from ctkit.policy.builder import Builder
from ctkit.policy.model import Policy, Toggle


def build_policy(doc: dict, source: str, lines: Mapping[str, int] | None = None, base: Path | None = None
                 ) -> tuple[Policy | None, list[Problem]]:
    """Build the model from a schema-valid document. Returns (policy, problems). `base`: the directory
    files the policy names (a set's elements_file) are relative to; None: the current directory."""
    b = Builder(source)
    sections = dict(  # in this order, so problems are reported in the order of the sections
        settings=build_settings(doc.get("conntrack", {})),
        notrack=build_notrack(b, doc.get("notrack", [])),
        helpers=build_helpers(b, doc.get("helpers", [])),
        chains=build_chains(b, doc.get("chains", {})),
        nat=build_nat(b, doc.get("nat", [])),
        timeouts=build_timeouts(b, doc.get("timeouts", [])),
        zones=build_zones(b, doc.get("zones", [])),
        sets=build_sets(b, doc.get("sets", {}), base),
        toggles=tuple(Toggle(k, v, f"/toggles/{k}") for k, v in doc.get("toggles", {}).items()),
    )
    if b.problems:
        return None, b.problems
    return Policy(version=doc["version"], table=doc.get("table", "ctkit"), source=source, **sections,
                  description=doc.get("description"),
                  lines=lines if lines is not None else MappingProxyType({})), []
