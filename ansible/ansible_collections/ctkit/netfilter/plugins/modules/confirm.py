#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: confirm
short_description: Confirm, roll back, or look at an armed ctkit rollback
version_added: 0.1.0
description:
  - The second half of O(ctkit.netfilter.policy#module:confirm_within). The policy module's action plugin calls it
    from a fresh connection by itself; use it directly to confirm an apply made with C(ctkit apply --confirm-within)
    or by an earlier task, to roll one back now, or to read what the rollback watcher did.
  - A thin wrapper over C(ctkit.service.confirm), C(ctkit.service.rollback) and ctkit's rollback state
    (C(ctkit.rollback.load), C(ctkit.rollback.last_event)).
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit in the target's Python (3.11 or later)
attributes:
  check_mode:
    support: full
    description: Says whether a rollback is armed; confirms and rolls back nothing.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    platforms: linux
    description: Linux, in any network namespace.
options:
  action:
    description:
      - V(confirm) keeps the policy the armed apply put in place. V(rollback) puts back now what ctkit owned
        before it. V(status) only reads.
    type: str
    choices: [confirm, rollback, status]
    default: confirm
  netns:
    description: Network namespace (a name under C(/run/netns), a path or C(pid:N)); default the current one.
    type: str
  table:
    description: Name of ctkit's table (the policy's C(table)).
    type: str
    default: ctkit
'''

EXAMPLES = r'''
- name: Apply by hand somewhere with ctkit apply --confirm-within 120, then keep it
  ctkit.netfilter.confirm:

- name: Put the previous policy back now
  ctkit.netfilter.confirm:
    action: rollback
    netns: tenant-a

- name: What did the watcher do?
  ctkit.netfilter.confirm:
    action: status
  register: rollback
'''

RETURN = r'''
done:
  description: Whether a rollback was armed and was confirmed (V(confirm)) or carried out (V(rollback)).
  returned: action is confirm or rollback
  type: bool
message:
  description: ctkit's words for what happened.
  returned: action is confirm or rollback
  type: str
  sample: "confirmed: the policy stays, the rollback is off"
armed:
  description: Whether a rollback is armed now (after the action).
  returned: always
  type: bool
deadline:
  description: When the armed rollback happens (seconds since the epoch).
  returned: when a rollback is armed
  type: float
last_event:
  description: The last line of ctkit's rollback log for this namespace and table.
  returned: always
  type: str
  sample: "2025-01-01T10:00:00+0000 not confirmed in time: rolled back: table inet ctkit restored"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    errors_fail,
    require_ctkit,
    service,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type='str', default='confirm', choices=['confirm', 'rollback', 'status']),
            netns=dict(type='str'),
            table=dict(type='str', default='ctkit'),
        ),
        supports_check_mode=True,
    )
    require_ctkit(module)
    from ctkit import rollback as armed_state
    p = module.params
    netns, table, action = p['netns'], p['table'], p['action']
    result = dict(changed=False)
    with errors_fail(module):
        armed = armed_state.load(netns, table)
        if action != 'status':
            if module.check_mode:
                result.update(changed=armed is not None, done=armed is not None,
                              message='would %s the armed rollback' % action if armed else 'no rollback is armed')
            else:
                done = service.confirm(table, netns) if action == 'confirm' else service.rollback(table, netns)
                result.update(changed=done.done, done=done.done, message=done.message)
                armed = armed_state.load(netns, table)
        result.update(armed=armed is not None, last_event=armed_state.last_event(netns, table) or '')
        if armed is not None:
            result['deadline'] = armed.deadline
    module.exit_json(**result)


if __name__ == '__main__':
    main()
