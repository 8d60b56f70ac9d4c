#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: audit
short_description: Audit a host against a ctkit policy (drift, settings, conntrack health) as data
version_added: 0.1.0
description:
  - Reads the kernel once and compares it with the policy, as C(ctkit audit --json) does (C(ctkit.service.audit)),
    for drift of ctkit's table or chains named by policy rule (rules added, removed, changed or reordered by hand),
    conntrack settings against the live sysctls, and health findings with severity, evidence and remedy
    (table fill, drops, helpers, foreign rules that interfere, tracked flows the policy no longer admits).
  - Changes nothing, unless O(flush_denied) is set; then it deletes exactly the conntrack entries of tracked
    flows the policy would no longer admit.
  - The report is returned as O(ignore:report) and as the fact C(ctkit_audit), for a fleet-wide summary built from
    C(hostvars). Options fail the task on drift or on findings at or above a severity.
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit and its Python libraries in the target's Python (3.11 or later)
attributes:
  check_mode:
    support: full
    description: The audit only reads; with O(flush_denied) it reports the flows it would flush.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    platforms: linux
    description: Linux, in any network namespace.
options:
  src:
    description:
      - The policy file (JSON or YAML) on the controller; the action plugin copies it to the target.
      - Mutually exclusive with O(content); one of them is required.
    type: path
  content:
    description: The policy itself, as JSON or YAML text, or as a mapping written in the task.
    type: raw
  netns:
    description: Network namespace (a name under C(/run/netns), a path or C(pid:N)); default the current one.
    type: str
  backend:
    description: The backend the policy was applied with.
    type: str
    choices: [nft, iptables]
    default: nft
  iptables_variant:
    description: With O(backend=iptables), iptables-nft, iptables-legacy or what the host's iptables command is.
    type: str
    choices: [auto, nft, legacy]
    default: auto
  state_file:
    description:
      - A file on the target where the audit keeps its last figures, so that drop counters are judged by what
        rose since the last audit that used it (C(ctkit audit --state)). It is written even in check mode.
    type: path
  check_flows:
    description: Judge every tracked flow against the policy (turn off on very large conntrack tables).
    type: bool
    default: true
  flush_denied:
    description: Delete the conntrack entries of the tracked flows the policy would no longer admit, and only those.
    type: bool
    default: false
  fail_on_drift:
    description: Fail the task when ctkit's part of the kernel differs from the policy.
    type: bool
    default: false
  fail_on_severity:
    description: Fail the task when a finding has this severity or a higher one. V(none) never fails on findings.
    type: str
    choices: [none, info, warning, critical]
    default: none
notes:
  - The task reports C(changed) only when O(flush_denied) deleted conntrack entries.
seealso:
  - module: ctkit.netfilter.policy
'''

EXAMPLES = r'''
- name: Audit the web servers
  ctkit.netfilter.audit:
    src: policies/web.yaml
  register: audit

- name: Fail on drift or on a critical finding
  ctkit.netfilter.audit:
    src: policies/web.yaml
    fail_on_drift: true
    fail_on_severity: critical

- name: Fleet summary, built on the controller from every host's fact
  ansible.builtin.debug:
    msg:
      drifted: "{{ ansible_play_hosts | map('extract', hostvars, ['ctkit_audit', 'drift']) | map('length') | list }}"
  run_once: true
'''

RETURN = r'''
report:
  description: The audit report, as C(ctkit audit --json) prints it (schemas/audit-report.schema.json).
  returned: always
  type: dict
  contains:
    status:
      description: V(clean) (no drift, no finding at warning or above) or V(attention).
      type: str
    drift:
      description: Each difference (kind, subject, origin, expected, actual), named by policy rule.
      type: list
      elements: dict
    settings:
      description: Each conntrack setting against the live sysctl.
      type: list
      elements: dict
    findings:
      description: Each finding (id, severity, subject, message, evidence, remedy), most severe first.
      type: list
      elements: dict
    conntrack:
      description: The figures read (count, max, buckets, expectations, stats).
      type: dict
drift:
  description: How many drift items the report has.
  returned: always
  type: int
findings:
  description: How many findings of each severity.
  returned: always
  type: dict
  sample: {info: 1, warning: 0, critical: 0}
status:
  description: V(clean) or V(attention).
  returned: always
  type: str
flushed:
  description: How many denied flows O(flush_denied) flushed (in check mode, would flush).
  returned: when flush_denied is set
  type: int
ansible_facts:
  description: Facts set by the module.
  returned: always
  type: dict
  contains:
    ctkit_audit:
      description: The same report as O(ignore:report).
      type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    KERNEL_ARGS,
    POLICY_ARGS,
    compile_policy,
    errors_fail,
    get_backend,
    require_ctkit,
    service,
)

SEVERITIES = ('info', 'warning', 'critical')  # ctkit.audit.findings.SEVERITIES, for the option's choices


def main():
    argument_spec = dict(
        state_file=dict(type='path'),
        check_flows=dict(type='bool', default=True),
        flush_denied=dict(type='bool', default=False),
        fail_on_drift=dict(type='bool', default=False),
        fail_on_severity=dict(type='str', default='none', choices=['none'] + list(SEVERITIES)),
    )
    argument_spec.update(POLICY_ARGS)
    argument_spec.update(KERNEL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('src', 'content')], required_one_of=[('src', 'content')])
    p = module.params
    require_ctkit(module, p['backend'])
    backend = get_backend(module)
    compiled, source = compile_policy(module)
    flush = p['flush_denied'] and not module.check_mode
    with errors_fail(module, source):
        report = service.audit(compiled, backend, p['netns'], p['state_file'],
                               check_flows=p['check_flows'] or p['flush_denied'], flush_denied=flush)
    data = report.as_dict()
    counts = dict((s, sum(1 for f in report.findings if f.severity == s)) for s in SEVERITIES)
    result = dict(changed=False, report=data, drift=len(report.drift), findings=counts, status=data['status'],
                  ansible_facts=dict(ctkit_audit=data))
    if p['flush_denied']:
        result['flushed'] = len(report.denied)
        result['changed'] = bool(report.denied) and not module.check_mode
    failures = []
    if p['fail_on_drift'] and report.drift:
        failures.append('%d drift item%s: %s' % (len(report.drift), '' if len(report.drift) == 1 else 's', ', '.join(
            '%s %s' % (d.kind, d.subject) for d in report.drift[:10])))
    if p['fail_on_severity'] != 'none':
        from ctkit.audit.findings import at_least
        serious = at_least(report.findings, p['fail_on_severity'])
        if serious:
            failures.append('%d finding%s at %s or above: %s' % (
                len(serious), '' if len(serious) == 1 else 's', p['fail_on_severity'],
                ', '.join('%s (%s)' % (f.id, f.severity) for f in serious[:10])))
    if failures:
        module.fail_json(msg='audit of %s: %s' % (report.owned, '; '.join(failures)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
