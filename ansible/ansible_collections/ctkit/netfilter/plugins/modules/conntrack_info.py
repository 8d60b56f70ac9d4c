#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: conntrack_info
short_description: Read the connection tracker of a host or namespace - count, maximum, per-CPU stats, a summary
version_added: 0.1.0
description:
  - Reads conntrack over ctnetlink with ctkit's reader (C(ctkit.kernel.conntrack), what C(ctkit ct count),
    C(ctkit ct stats) and C(ctkit ct summary) print), that is the number of entries and the host-wide maximum, the
    per-CPU counters and their totals, the number of expectations, and the entries counted by any fields in
    one streaming pass.
  - Changes nothing.
author:
  - ctkit contributors (@ctkit)
requirements:
  - ctkit and its Python libraries in the target's Python (3.11 or later)
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    platforms: linux
    description: Linux, in any network namespace.
options:
  netns:
    description: Network namespace (a name under C(/run/netns), a path or C(pid:N)); default the current one.
    type: str
  summary_by:
    description:
      - Fields to count entries by (C(proto), C(state), C(dport), C(src), C(mark), C(zone), C(helper), C(status)...,
        the fields of C(ctkit ct list)). An empty list skips the summary and so the dump of the table.
    type: list
    elements: str
    default: [proto, state]
  top:
    description: Keep only the N largest groups of the summary; V(0) keeps all.
    type: int
    default: 0
  filter:
    description: Which entries the summary counts, as C(ctkit ct summary)'s options (the kernel applies what it can).
    type: dict
    default: {}
    suboptions:
      family:
        description: V(ipv4) or V(ipv6).
        type: str
      proto:
        description: tcp, udp, icmp, icmpv6, sctp... or a number.
        type: str
      src:
        description: Original source address or CIDR.
        type: str
      dst:
        description: Original destination address or CIDR.
        type: str
      reply_src:
        description: Reply source address or CIDR.
        type: str
      reply_dst:
        description: Reply destination address or CIDR.
        type: str
      sport:
        description: Original source port.
        type: int
      dport:
        description: Original destination port.
        type: int
      state:
        description: TCP state(s), comma separated, for example C(ESTABLISHED,TIME_WAIT).
        type: str
      status:
        description: Status flags that must be set (C(ASSURED)), C(!FLAG) for clear.
        type: str
      mark:
        description: C(VALUE) or C(VALUE/MASK).
        type: str
      zone:
        description: Conntrack zone.
        type: int
      helper:
        description: Helper name, for example C(ftp).
        type: str
'''

EXAMPLES = r'''
- name: Conntrack figures of every web server
  ctkit.netfilter.conntrack_info:
  register: ct

- name: The ten busiest destination ports among established TCP flows in a namespace
  ctkit.netfilter.conntrack_info:
    netns: tenant-a
    summary_by: [dport]
    top: 10
    filter:
      proto: tcp
      state: ESTABLISHED

- name: Only count and stats (no dump of the table)
  ctkit.netfilter.conntrack_info:
    summary_by: []
'''

RETURN = r'''
conntrack:
  description: What was read.
  returned: always
  type: dict
  contains:
    count:
      description: Entries in the namespace's table.
      type: int
      sample: 1523
    max:
      description: The host-wide C(nf_conntrack_max), or null where the kernel does not say.
      type: int
      sample: 262144
    fill:
      description: O(ignore:count) / O(ignore:max), or null without a maximum.
      type: float
    expectations:
      description: Entries in the expectation table.
      type: int
    stats:
      description: Per-CPU counters (source V(ctnetlink) or V(procfs)), as C(ctkit ct stats --json).
      type: dict
      contains:
        source:
          description: Where the counters were read.
          type: str
        entries:
          description: The table size.
          type: int
        totals:
          description: Each counter summed over the CPUs (found, invalid, insert, insert_failed, drop, early_drop...).
          type: dict
        per_cpu:
          description: One dict per CPU, its number as V(cpu).
          type: list
          elements: dict
    summary:
      description: The entries counted by O(summary_by), as C(ctkit ct summary --json); absent when O(summary_by) is empty.
      type: dict
      contains:
        by:
          description: The fields.
          type: list
          elements: str
        total:
          description: Entries counted.
          type: int
        groups:
          description: One dict per group, largest first, with the fields' values and V(count).
          type: list
          elements: dict
          sample: [{proto: tcp, state: ESTABLISHED, count: 1200}]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ctkit.netfilter.plugins.module_utils.ctkit_common import (
    errors_fail,
    require_ctkit,
)

FILTER = dict(family='str', proto='str', src='str', dst='str', reply_src='str', reply_dst='str', sport='int',
              dport='int', state='str', status='str', mark='str', zone='int', helper='str')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            netns=dict(type='str'),
            summary_by=dict(type='list', elements='str', default=['proto', 'state']),
            top=dict(type='int', default=0),
            filter=dict(type='dict', default={}, options=dict((k, dict(type=t)) for k, t in FILTER.items())),
        ),
        supports_check_mode=True,
    )
    require_ctkit(module)
    from ctkit.errors import UsageError
    from ctkit.kernel import conntrack as ct
    p = module.params
    netns = p['netns']
    if p['top'] < 0:
        module.fail_json(msg='top must be 0 or more')
    with errors_fail(module):
        count = ct.count(netns)
        stats = ct.stats(netns)
        data = dict(count=count.entries, max=count.max_entries,
                    fill=(float(count.entries) / count.max_entries) if count.max_entries else None,
                    expectations=len(ct.expectations(netns)),
                    stats=dict(source=stats.source, entries=stats.entries, totals=dict(stats.totals),
                               per_cpu=[dict(v, cpu=cpu) for cpu, v in stats.per_cpu]))
        by = tuple(f.strip() for f in p['summary_by'] if f.strip())
        if by:
            for name in by:
                ct.column(name)  # an unknown field is a UsageError naming the valid ones
            try:
                flt = ct.Filter.parse(**dict((k, v) for k, v in (p['filter'] or {}).items() if v is not None))
            except ct.FilterError as exc:
                raise UsageError('filter.%s%s' % (exc.field, exc.detail)) from None
            counts = ct.summary(netns, by, flt)
            data['summary'] = dict(by=list(by), total=sum(counts.values()), groups=[
                dict([(field, list(v) if isinstance(v, (list, tuple)) else v) for field, v in zip(by, key, strict=True)],
                     count=number)
                for key, number in counts.most_common(p['top'] or None)])
    module.exit_json(changed=False, conntrack=data)


if __name__ == '__main__':
    main()
