# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between the collection's modules and ctkit's Python API (ctkit/service.py).

Nothing here decides anything about netfilter: it imports ctkit (or says how to install it),
maps the modules' options to ctkit's calls, turns ctkit's errors into failed results with ctkit's
own messages, and lays a plan out as an Ansible diff. Requires Python 3.11 on the target (ctkit's).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import traceback

from ansible.module_utils.basic import missing_required_lib

CTKIT_IMPORT_ERROR = None
try:
    from ctkit import errors as ctkit_errors
    from ctkit import pipeline, service
    from ctkit.backends import registry
except ImportError:
    HAS_CTKIT = False
    CTKIT_IMPORT_ERROR = traceback.format_exc()
    ctkit_errors = pipeline = service = registry = None
else:
    HAS_CTKIT = True

INSTALL_HINT = (
    "Install ctkit into the Python interpreter Ansible uses on the target (ansible_python_interpreter), "
    "e.g. `python3 -m pip install ctkit` or `make install` in a ctkit checkout (its virtualenv is "
    ".venv/bin/python), and the Debian packages it drives: "
    "apt-get install nftables libnftables1 iptables ipset conntrack iproute2")

#: the options every module that reaches the kernel shares
KERNEL_ARGS = dict(
    netns=dict(type='str'),
    backend=dict(type='str', default='nft', choices=['nft', 'iptables']),
    iptables_variant=dict(type='str', default='auto', choices=['auto', 'nft', 'legacy']),
)

#: the Python libraries ctkit imports when it runs (a half-installed ctkit fails on the first of them)
_LIBRARIES = (('yaml', 'PyYAML'), ('jsonschema', 'jsonschema'), ('fastjsonschema', 'fastjsonschema'),
              ('pyroute2', 'pyroute2'))


def require_ctkit(module, backend=None):
    """Fail the task, with the install hint, when ctkit or a library it needs is missing on the target."""
    if not HAS_CTKIT:
        module.fail_json(msg=missing_required_lib('ctkit', reason='to manage netfilter with ctkit') + ' ' +
                         INSTALL_HINT, exception=CTKIT_IMPORT_ERROR)
    import importlib
    for name, package in _LIBRARIES + ((('nftables', 'pip-nftables'),) if backend == 'nft' else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            module.fail_json(msg=missing_required_lib(package, reason='for ctkit') + ' ' + INSTALL_HINT,
                             exception=traceback.format_exc())
    if backend == 'nft':
        import ctypes
        try:
            ctypes.CDLL('libnftables.so.1')
        except OSError as exc:
            module.fail_json(msg="ctkit's nft backend needs the C library libnftables.so.1, which is missing on "
                             "the target (%s). %s" % (exc, INSTALL_HINT))


def get_backend(module):
    p = module.params
    with errors_fail(module):
        return registry.get(p['backend'], p['iptables_variant'])


class errors_fail(object):
    """`with errors_fail(module):` a ctkit error fails the task with ctkit's message and exit code.

    A PolicyError lists every located problem (file:line: severity: /pointer: message (hint));
    `source` names the policy as the user knows it (the controller's src, or `content`), where ctkit
    saw the temporary file the module read."""

    def __init__(self, module, source=None, path=None, **extra):
        self.module, self.source, self.path, self.extra = module, source, path, extra

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, ctkit_errors.CtkitError):
            return False
        if isinstance(exc, ctkit_errors.PolicyError):
            problems = [self._renamed(p) for p in exc.problems]
            errors = [p for p in problems if p.severity == 'error']
            self.module.fail_json(
                msg="invalid policy, nothing applied: %d problem%s\n%s" % (
                    len(errors), '' if len(errors) == 1 else 's', '\n'.join(p.render() for p in problems)),
                problems=[p.as_dict() for p in problems], exit_code=exc.exit_code, error='PolicyError',
                changed=False, **self.extra)
        self.module.fail_json(msg='ctkit: %s' % exc, error=type(exc).__name__, exit_code=exc.exit_code,
                              changed=False, **self.extra)
        return False

    def _renamed(self, problem):
        return problem if self.source is None else _renamed_problem(problem, self.path, self.source)


POLICY_ARGS = dict(
    src=dict(type='path'),
    content=dict(type='raw'),
)


def compile_policy(module):
    """The task's policy (src, copied here by the action plugin, or content) through ctkit's pipeline.

    Returns (compiled, source name). Lint warnings become task warnings."""
    p = module.params
    if p['content'] is not None:
        content = p['content']
        if not isinstance(content, str):  # a policy written as YAML in the task itself
            import json
            content = json.dumps(content)
        path = os.path.join(module.tmpdir, 'content.policy')  # no suffix: ctkit tells JSON from YAML itself
        with open(path, 'w', encoding='utf-8') as f:
            f.write(content)
        source = 'content'
    elif p['src'] is not None:
        path, source = p['src'], p['src']  # the action plugin puts the controller's path back into the results
    else:
        module.fail_json(msg='one of src or content is required')
    with errors_fail(module, source, path):
        compiled = pipeline.compile_file(path)
    for w in compiled.warnings:
        module.warn(_renamed_problem(w, path, source).render())
    return compiled, source


def _renamed_problem(problem, path, source):
    if problem.source != path:
        return problem
    import dataclasses
    return dataclasses.replace(problem, source=source)


def _head(kind, subject):
    """rule input/ssh, chain input, members of set blocklist, toggle maintenance, ct timeout dns..."""
    if kind == 'elements':
        return 'members of %s' % subject
    return subject if kind != 'rule' and subject.split(' ', 1)[0] in (kind, 'ct', 'set', 'chain') else '%s %s' % (
        kind, subject)


_MARK = {'add': 'added', 'remove': 'removed', 'change': 'changed', 'move': 'moved'}


def plan_diff(pending, settings=(), netns=None, source=None):
    """An Ansible diff of a plan (ctkit's Pending as a dict: where, method, items): one block per
    PlanItem, headed by what it is and the policy rule or pointer it comes from, so the diff reads
    by policy rule. Settings that would change follow as `setting net.netfilter.X`."""
    before, after = [], []
    for item in pending.get('items', []):
        head = _head(item['kind'], item['subject'])
        if item.get('origin'):
            head += '  [%s]' % item['origin']
        head += '  (%s)' % _MARK.get(item['action'], item['action'])
        before.append(head)
        after.append(head)
        if item['action'] == 'move':
            before.append('    %s' % (item.get('before') or ''))
            after.append('    %s   (moved)' % (item.get('after') or ''))
            continue
        before.append('    %s' % (item['before'] if item.get('before') is not None else '(absent)'))
        after.append('    %s' % (item['after'] if item.get('after') is not None else '(absent)'))
    for r in settings:
        if r.get('result') in ('would change', 'changed'):
            head = 'setting %s' % r['sysctl']
            before += [head, '    %s' % r.get('before')]
            after += [head, '    %s' % r.get('wanted')]
    where = pending.get('where', 'ctkit')
    if netns:
        where += ' in netns %s' % netns
    return {
        'before_header': '%s (kernel now)' % where,
        'after_header': '%s (policy %s)' % (where, source) if source else '%s (after)' % where,
        'before': '\n'.join(before) + ('\n' if before else ''),
        'after': '\n'.join(after) + ('\n' if after else ''),
    }


# ---------------------------------------------------------------- set members
# ctkit's API adds and deletes one member (service.set_member) but has no call that lists a set's
# live members, which an idempotent module needs. Until it has one, these read them the way
# `ctkit show` and `ipset save` print them; both are reads, and nothing here writes.

def _nft_key(value):
    import json
    if isinstance(value, dict) and 'elem' in value:
        value = value['elem']['val']
    if isinstance(value, dict) and 'prefix' in value:
        prefix = value['prefix']
        if prefix.get('len') in (32, 128):  # a single address, as the kernel prints it
            value = prefix['addr']
    return json.dumps(value, sort_keys=True)


def member_key(backend, member):
    """The key a parsed ctkit member (ctkit.members.Member) has among live_members()."""
    return _nft_key(member.nft()) if backend.name == 'nft' else member.text()


def live_members(backend, table, name, netns):
    """The keys of the members the kernel holds in the policy's set `name` now."""
    if backend.name == 'nft':
        shown = service.show(backend, table, netns)
        for item in shown.details.get('nftables', []):
            s = item.get('set') if isinstance(item, dict) else None
            if s and s.get('name') == name:
                return set(_nft_key(e) for e in s.get('elem', []))
        return set()
    import subprocess

    from ctkit.kernel.netns import entered
    from ctkit.names import chain_prefix, ipset_name
    set_name = ipset_name(chain_prefix(table), name)
    with entered(netns):
        proc = subprocess.run(['ipset', 'save', set_name], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise ctkit_errors.KernelError('cannot read ipset %s: %s' % (set_name, proc.stderr.strip()))
    keys = set()
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == 'add' and words[1] == set_name:
            keys.add(words[2])
    return keys
