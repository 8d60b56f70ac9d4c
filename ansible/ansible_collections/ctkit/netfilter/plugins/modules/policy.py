#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: policy
short_description: Apply a ctkit netfilter/conntrack policy atomically, with plan, diff and confirm-or-rollback
version_added: 0.1.0
description:
  - Brings what ctkit owns in the kernel (nft C(table inet ctkit), or the C(CTKIT-) chains and ipsets on
    iptables) to a policy file, in one kernel transaction that changes only what differs. This is
    C(ctkit apply); the module is a thin wrapper over ctkit's Python API (C(ctkit.service.plan),
    C(ctkit.service.apply), C(ctkit.service.remove)).
  - C(changed) is exact. It is V(false) when the kernel already holds the policy; then nothing at all is
    sent to the kernel (C(nft monitor) sees no event).
  - In check mode the module returns ctkit's plan, read from the kernel once; nothing is written.
  - In diff mode it returns the plan as a before/after text, one block per policy rule, chain, set,
    member, toggle or host setting that would change, each named by its policy rule and JSON pointer.
  - An invalid policy fails the host with every problem ctkit finds (file, line, JSON pointer, message,
    hint); nothing is applied.
  - With O(confirm_within) the action plugin applies with ctkit's confirm-or-rollback, then confirms from
    a fresh connection. When it cannot reach the host again in time (the new policy cut the path), the
    host puts back what ctkit owned before by itself, and the task fails saying so.
  - Other tables, chains and rules (docker's, fail2ban's) are never touched.
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit and its Python libraries in the target's Python (3.11 or later)
  - nftables (libnftables1) for O(backend=nft); iptables and ipset for O(backend=iptables)
  - root on the target
extends_documentation_fragment: []
attributes:
  check_mode:
    support: full
    description: Returns the plan (what an apply would change); the kernel is only read.
  diff_mode:
    support: full
    description: Before/after by policy rule, from the plan's items.
  platform:
    support: full
    platforms: linux
    description: Linux with nf_tables (or iptables), in any network namespace.
options:
  src:
    description:
      - A policy file (JSON or YAML) on the controller. The action plugin copies it to the target; a
        relative path is looked up as M(ansible.builtin.copy) does (the role's or playbook's C(files/)).
      - Problems in the policy are reported with this path and its line numbers.
      - Mutually exclusive with O(content). One of them is required with O(state=present).
    type: path
  content:
    description:
      - The policy itself, as JSON or YAML text, or as a mapping written in the task.
      - Problems are reported against the name C(content).
    type: raw
  netns:
    description:
      - Network namespace to work in, a name under C(/run/netns), a path, or C(pid:N). Default is the
        namespace the module runs in. An empty string is refused, never taken for the host's namespace.
    type: str
  backend:
    description: Kernel backend.
    type: str
    choices: [nft, iptables]
    default: nft
  iptables_variant:
    description: With O(backend=iptables), iptables-nft, iptables-legacy, or what the host's iptables command is.
    type: str
    choices: [auto, nft, legacy]
    default: auto
  state:
    description:
      - V(present) applies the policy. V(absent) deletes everything ctkit owns under O(table), nothing else.
    type: str
    choices: [present, absent]
    default: present
  table:
    description:
      - Name of ctkit's table for O(state=absent). With O(state=present) the policy's own C(table) is used.
    type: str
    default: ctkit
  confirm_within:
    description:
      - Seconds. What ctkit owned before is saved and put back by a detached watcher on the target unless
        the apply is confirmed in time. The action plugin confirms it from a fresh connection as soon as the
        apply has returned; when it cannot reach the host, the host rolls itself back and the task fails
        with C(rolled_back=true).
      - Keep the connection timeout (C(ansible_timeout)) well under this value, so that a lost path is
        noticed and retried within it.
      - Only with O(state=present); ignored in check mode.
    type: float
notes:
  - Run with root privileges (become) on the target; ctkit refuses to change a namespace it cannot enter.
  - A lint warning in the policy becomes a task warning.
seealso:
  - module: ctkit.netfilter.audit
  - module: ctkit.netfilter.confirm
'''

EXAMPLES = r'''
- name: Push the web servers' policy
  ctkit.netfilter.policy:
    src: policies/web.yaml

- name: What would change (check mode), shown by policy rule
  ctkit.netfilter.policy:
    src: policies/web.yaml
  check_mode: true
  diff: true

- name: Apply, and roll back by itself unless the controller can still reach the host 60 s later
  ctkit.netfilter.policy:
    src: policies/web.yaml
    confirm_within: 60

- name: A policy inside a network namespace, on the iptables backend
  ctkit.netfilter.policy:
    content: "{{ lookup('ansible.builtin.template', 'policy.json.j2') }}"
    netns: tenant-a
    backend: iptables
    iptables_variant: nft

- name: Remove ctkit's table (and nothing else)
  ctkit.netfilter.policy:
    state: absent
'''

RETURN = r'''
changed:
  description: Whether the kernel changed (check mode, whether it would). False when the policy is in place already.
  returned: always
  type: bool
plan:
  description: ctkit's plan, read from the kernel (check mode), or the one the apply carried out.
  returned: state=present
  type: dict
  contains:
    where:
      description: What ctkit owns, in the backend's words.
      type: str
      sample: table inet ctkit
    method:
      description: V(none) (nothing to send), V(create), V(incremental) (only what differs) or V(replace).
      type: str
      sample: incremental
    reason:
      description: Why a whole replacement was needed, or what an incremental change touches.
      type: str
    items:
      description: One per difference.
      type: list
      elements: dict
      sample:
        - kind: rule
          action: add
          subject: input/ssh
          origin: /chains/0/rules/1
          before: null
          after: tcp dport 22 accept
summary:
  description: What was applied, in the backend's words.
  returned: state=present, not in check mode
  type: str
  sample: table inet ctkit, 3 chains, 12 rules
details:
  description: The apply's details as C(ctkit apply --json) gives them.
  returned: state=present, not in check mode
  type: dict
settings:
  description: Host conntrack settings of the policy (key, sysctl, wanted, before, result, met).
  returned: state=present
  type: list
  elements: dict
toggles:
  description: Each toggle's state after the apply, and the policy file's value.
  returned: state=present
  type: dict
  sample: {maintenance: {'on': false, policy: false}}
rollback_at:
  description: With O(confirm_within), the time (seconds since the epoch) at which the host rolls back unless confirmed.
  returned: when a rollback was armed
  type: float
rollback_in:
  description: With O(confirm_within), seconds from the module's return to the rollback (the action plugin's clock).
  returned: when a rollback was armed
  type: float
table:
  description: The policy's table name.
  returned: state=present
  type: str
  sample: ctkit
confirmed:
  description: With O(confirm_within), whether the action plugin confirmed the apply from a fresh connection.
  returned: when a rollback was armed
  type: bool
rolled_back:
  description: With O(confirm_within), true when the host could not be reached in time and rolled itself back.
  returned: when a rollback was armed
  type: bool
rollback_event:
  description: The last line of ctkit's rollback log on the host (what the watcher or the confirm did).
  returned: when a rollback was armed
  type: str
  sample: "2025-01-01T10:00:00+0000 not confirmed in time: rolled back: table inet ctkit restored"
removed:
  description: With O(state=absent), what ctkit removed, in its words.
  returned: state=absent
  type: str
problems:
  description: For an invalid policy, every problem ctkit found (severity, source, pointer, line, message, hint).
  returned: failure on an invalid policy
  type: list
  elements: dict
exit_code:
  description: ctkit's exit code for the error (2 invalid input, 3 kernel or permission).
  returned: failure
  type: int
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    KERNEL_ARGS,
    POLICY_ARGS,
    compile_policy,
    errors_fail,
    get_backend,
    plan_diff,
    require_ctkit,
    service,
)


def _toggles(states):
    return dict((n, {'on': on, 'policy': p}) for n, (on, p) in states.items())


def absent(module, backend):
    p = module.params
    with errors_fail(module):
        shown = service.show(backend, p['table'], p['netns'])
        result = dict(changed=shown.present)
        if module._diff:
            result['diff'] = dict(before=shown.listing, after='', before_header=shown.details.get('table', p['table']))
        if module.check_mode or not shown.present:
            result['removed'] = shown.absent if not shown.present else ''
            module.exit_json(**result)
        removed = service.remove(backend, p['table'], p['netns'])
    for w in removed.warnings:
        module.warn(w)
    result.update(changed=removed.removed, removed=removed.message)
    module.exit_json(**result)


def main():
    argument_spec = dict(
        state=dict(type='str', default='present', choices=['present', 'absent']),
        table=dict(type='str', default='ctkit'),
        confirm_within=dict(type='float'),
    )
    argument_spec.update(POLICY_ARGS)
    argument_spec.update(KERNEL_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[('src', 'content')],
        required_if=[('state', 'present', ('src', 'content'), True)],
    )
    p = module.params
    if p['confirm_within'] is not None and not 1 <= p['confirm_within'] <= 86400:
        module.fail_json(msg='confirm_within must be 1 to 86400 seconds')
    if p['confirm_within'] is not None and p['state'] == 'absent':
        module.fail_json(msg='confirm_within applies to state=present only')
    require_ctkit(module, p['backend'])
    backend = get_backend(module)
    if p['state'] == 'absent':
        absent(module, backend)

    compiled, source = compile_policy(module)
    netns = p['netns']
    with errors_fail(module, source):
        if module.check_mode:
            planned = service.plan(compiled, backend, netns)
            pending, result = planned.pending, dict(changed=planned.changed)
        else:
            applied = service.apply(compiled, backend, netns, confirm_within=p['confirm_within'])
            pending, result = applied.pending, dict(changed=applied.changed, summary=applied.summary,
                                                    details=applied.applied.details)
            if applied.rollback_at is not None:
                result.update(rollback_at=applied.rollback_at, rollback_in=applied.rollback_at - time.time())
            for w in applied.warnings:
                module.warn(w)
    done = planned if module.check_mode else applied
    settings = [r.as_dict() for r in done.settings]
    plan = pending.as_dict() if pending is not None else dict(where=backend.owned(compiled.plan.table.name),
                                                              method='replace', reason=None, items=[])
    result.update(plan=plan, settings=settings, toggles=_toggles(done.toggles), backend=backend.name, netns=netns,
                  table=compiled.plan.table.name)
    if module._diff:
        result['diff'] = plan_diff(plan, settings, netns, source)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
