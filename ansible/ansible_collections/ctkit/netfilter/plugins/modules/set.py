#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: set
short_description: Add or delete run-time members of a ctkit policy's named set
version_added: 0.1.0
description:
  - Makes O(members) present in (or absent from) one of the policy's named C(sets), such as a block list, one small
    kernel update per member, as C(ctkit set add|del) does (C(ctkit.service.set_member)). Each member is parsed by
    the set's own type as the kernel holds it (an address set takes addresses, never a host name to look up).
  - The live members are read first; members already as wanted are left alone, so the task is idempotent and
    C(changed) names only what it changed.
  - Members added at run time survive a later apply of the policy (it changes only the members the file declares).
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit and its Python libraries in the target's Python (3.11 or later)
attributes:
  check_mode:
    support: full
    description: Reads the live members and says which would change.
  diff_mode:
    support: full
    description: The members that would be added or deleted.
  platform:
    support: full
    platforms: linux
    description: Linux, in any network namespace.
options:
  name:
    description: The set's name, as the policy declares it.
    type: str
    required: true
  members:
    description:
      - Members in ctkit's syntax, for example C(192.0.2.1), C(10.0.0.0/8), C(80), C(1000-2000), C(192.0.2.1 . 80).
    type: list
    elements: str
    required: true
  state:
    description: V(present) adds the members that are missing; V(absent) deletes the ones that are there.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description: Seconds until an added member expires (the set must have a timeout). Members present already keep theirs.
    type: int
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
notes:
  - On the iptables backend a range member (C(1000-2000), C(192.0.2.1-192.0.2.9)) is stored by ipset as single ports or
    networks, so it is always sent again and reported changed; single values and prefixes are idempotent on both backends.
seealso:
  - module: ctkit.netfilter.policy
'''

EXAMPLES = r'''
- name: Block two addresses for an hour
  ctkit.netfilter.set:
    name: blocklist
    members: [198.51.100.7, 203.0.113.9]
    timeout: 3600

- name: Unblock one
  ctkit.netfilter.set:
    name: blocklist
    members: [198.51.100.7]
    state: absent
'''

RETURN = r'''
added:
  description: Members added (in check mode, that would be).
  returned: always
  type: list
  elements: str
deleted:
  description: Members deleted (in check mode, that would be).
  returned: always
  type: list
  elements: str
where:
  description: The set, in the backend's words.
  returned: always
  type: str
  sample: set inet ctkit blocklist
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    KERNEL_ARGS,
    errors_fail,
    get_backend,
    live_members,
    member_key,
    require_ctkit,
    service,
)


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        members=dict(type='list', elements='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        timeout=dict(type='int'),
        table=dict(type='str', default='ctkit'),
    )
    argument_spec.update(KERNEL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    require_ctkit(module, p['backend'])
    from ctkit import members as ctkit_members
    backend = get_backend(module)
    name, table, netns, add = p['name'], p['table'], p['netns'], p['state'] == 'present'
    if p['timeout'] is not None and not add:
        module.fail_json(msg='timeout applies to state=present only')
    with errors_fail(module):
        ctkit_members.check_set_name(name)
        set_type = backend.member_type(table, name, netns)
        live = live_members(backend, table, name, netns)
        todo, seen = [], set()
        for text in p['members']:
            key = member_key(backend, ctkit_members.parse(text, set_type))
            if key in seen:
                continue
            seen.add(key)
            if (key in live) != add:
                todo.append(text)
        where = None
        if not module.check_mode:
            for text in todo:
                where = service.set_member(backend, name, text, add, p['timeout'], table, netns).where
    result = dict(changed=bool(todo), added=todo if add else [], deleted=[] if add else todo,
                  where=where or ('set %s' % name))
    if module._diff:
        result['diff'] = dict(before=''.join('%s\n' % m for m in todo if not add),
                              after=''.join('%s\n' % m for m in todo if add),
                              before_header='set %s' % name, after_header='set %s' % name)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
