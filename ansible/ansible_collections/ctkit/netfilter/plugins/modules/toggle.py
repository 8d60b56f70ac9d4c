#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: toggle
short_description: Switch a toggle of a ctkit policy on or off, without a reload
version_added: 0.1.0
description:
  - Sets one of the policy's C(toggles) (a switch such as C(maintenance) that rules test) to O(state), in one small
    atomic kernel update, as C(ctkit toggle NAME on|off) does (C(ctkit.service.toggle)). The live state is read
    first; a toggle already in O(state) is left alone and the task reports no change.
  - A later apply of the policy keeps the live state unless the policy file changed the toggle's value.
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit and its Python libraries in the target's Python (3.11 or later)
attributes:
  check_mode:
    support: full
    description: Reads the live state and says whether it would change.
  diff_mode:
    support: full
    description: The toggle's state before and after.
  platform:
    support: full
    platforms: linux
    description: Linux, in any network namespace.
options:
  name:
    description: The toggle's name, as the policy declares it.
    type: str
    required: true
  state:
    description: V(on) or V(off).
    type: str
    choices: ['on', 'off']
    required: true
  netns:
    description: Network namespace (a name under C(/run/netns), a path or C(pid:N)); default the current one.
    type: str
  table:
    description: Name of ctkit's table (the policy's C(table)).
    type: str
    default: ctkit
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
seealso:
  - module: ctkit.netfilter.policy
'''

EXAMPLES = r'''
- name: Close the web ports for maintenance
  ctkit.netfilter.toggle:
    name: maintenance
    state: 'on'

- name: Open them again
  ctkit.netfilter.toggle:
    name: maintenance
    state: 'off'
'''

RETURN = r'''
toggle:
  description: The toggle's name.
  returned: always
  type: str
  sample: maintenance
'on':
  description: Its state after the task (in check mode, what it would be).
  returned: always
  type: bool
policy:
  description: The policy file's value at the last apply (null when unknown).
  returned: always
  type: bool
where:
  description: Where the toggle lives, in the backend's words.
  returned: always
  type: str
  sample: table inet ctkit
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    KERNEL_ARGS,
    errors_fail,
    get_backend,
    require_ctkit,
    service,
)


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', required=True, choices=['on', 'off']),
        table=dict(type='str', default='ctkit'),
    )
    argument_spec.update(KERNEL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    require_ctkit(module, p['backend'])
    backend = get_backend(module)
    name, table, netns, want = p['name'], p['table'], p['netns'], p['state'] == 'on'
    with errors_fail(module):
        states = backend.toggle_states(table, netns)
        if name not in states:
            module.fail_json(msg='no toggle %r in %s%s (toggles there: %s); apply a policy that declares it' % (
                name, backend.owned(table), ' in netns %s' % netns if netns else '', ', '.join(sorted(states)) or 'none'))
        on, policy = states[name]
        changed = on != want
        where = backend.owned(table)
        if changed and not module.check_mode:
            where = service.toggle(backend, name, want, table, netns).where
    result = dict(changed=changed, toggle=name, on=want, policy=policy, where=where)
    if module._diff:
        result['diff'] = dict(before='toggle %s: %s\n' % (name, 'on' if on else 'off'),
                              after='toggle %s: %s\n' % (name, p['state']))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
