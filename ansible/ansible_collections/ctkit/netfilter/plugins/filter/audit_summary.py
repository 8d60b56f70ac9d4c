# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
name: audit_summary
short_description: A fleet-wide summary of ctkit.netfilter.audit reports
version_added: 0.1.0
description:
  - Takes the audit report of every host (the C(ctkit_audit) fact that M(ctkit.netfilter.audit) sets), as a mapping
    from host name to report, and counts on the controller which hosts drift, which need attention and which findings
    come up most often. It only counts what the reports say.
options:
  _input:
    description: Host name -> audit report.
    type: dict
    required: true
  top:
    description: How many of the most frequent findings to list.
    type: int
    default: 10
author:
  - ctkit contributors (@ctkit)
'''

EXAMPLES = r'''
- name: Fleet summary, once, from every host's audit
  ansible.builtin.debug:
    msg: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'ctkit_audit')))
             | ctkit.netfilter.audit_summary }}"
  run_once: true
'''

RETURN = r'''
_value:
  description: The summary.
  type: dict
  contains:
    hosts:
      description: How many hosts were audited.
      type: int
    clean:
      description: Hosts with no drift and no finding at warning or above.
      type: list
      elements: str
    drifted:
      description: Hosts whose ctkit table or settings differ from the policy, each with its drift subjects.
      type: dict
    attention:
      description: Hosts whose status is C(attention).
      type: list
      elements: str
    top_findings:
      description: The most frequent findings, each with id, severity (the highest seen), and the hosts that have it.
      type: list
      elements: dict
'''

from ansible.errors import AnsibleFilterError

SEVERITY_RANK = {'info': 0, 'warning': 1, 'critical': 2}


def audit_summary(reports, top=10):
    if not isinstance(reports, dict):
        raise AnsibleFilterError('audit_summary wants a mapping of host name to ctkit audit report')
    clean, attention, drifted, findings = [], [], {}, {}
    for host in sorted(reports):
        report = reports[host] or {}
        (clean if report.get('status') == 'clean' else attention).append(host)
        if report.get('drift'):
            drifted[host] = ['%s %s' % (d.get('kind'), d.get('subject')) for d in report['drift']]
        for f in report.get('findings', []):
            entry = findings.setdefault(f['id'], {'id': f['id'], 'severity': f['severity'], 'hosts': []})
            if SEVERITY_RANK.get(f['severity'], 0) > SEVERITY_RANK.get(entry['severity'], 0):
                entry['severity'] = f['severity']
            if host not in entry['hosts']:
                entry['hosts'].append(host)
    ranked = sorted(findings.values(), key=lambda e: (-len(e['hosts']), -SEVERITY_RANK.get(e['severity'], 0), e['id']))
    return {'hosts': len(reports), 'clean': clean, 'attention': attention, 'drifted': drifted,
            'top_findings': ranked[:top]}


class FilterModule:
    def filters(self):
        return {'audit_summary': audit_summary}
