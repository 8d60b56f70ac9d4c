"""Findings: one thing the audit wants a human to know, with evidence and a remedy."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Finding:
    id: str  # stable identifier, e.g. conntrack.table-fill
    severity: str  # info | warning | critical
    subject: str  # what it is about: a setting, a rule, a table
    message: str
    remedy: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "subject": self.subject, "message": self.message,
                "evidence": self.evidence, "remedy": self.remedy}


def at_least(findings, severity: str) -> list[Finding]:
    rank = SEVERITIES.index(severity)
    return [f for f in findings if SEVERITIES.index(f.severity) >= rank]
