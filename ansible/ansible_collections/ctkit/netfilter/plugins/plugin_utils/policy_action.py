# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the policy and audit action plugins share: `src` on the controller, copied to the target.

The file goes into the task's remote temporary directory under a name that keeps its suffix (ctkit
tells JSON from YAML by it). In the results, the copy's path is replaced by the controller's, so
ctkit's located problems (file:line: ...) name the file the user wrote, not the copy.
"""
from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase


class PolicyAction(ActionBase):
    TRANSFERS_FILES = True

    def _policy_args(self) -> dict:
        """The task's arguments with `src` replaced by the copy on the target."""
        args = dict(self._task.args)
        src = args.get('src')
        if src is None:
            return args
        if args.get('content') is not None:
            raise AnsibleActionFail('parameters are mutually exclusive: src|content')
        try:
            local = self._find_needle('files', src)
        except AnsibleError as exc:
            raise AnsibleActionFail(to_text(exc)) from None
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        tmpdir = self._connection._shell.tmpdir
        suffix = os.path.splitext(local)[1].lower()
        remote = self._connection._shell.join_path(tmpdir, 'ctkit-policy' + (
            suffix if suffix in ('.json', '.yaml', '.yml') else ''))
        self._transfer_file(local, remote)
        self._fixup_perms2((tmpdir, remote))
        args['src'] = remote
        self._copies = (remote, src)
        return args

    def _cleanup(self, result: dict) -> dict:
        """The result with the copy's path replaced by the controller's `src` wherever it appears."""
        copies = getattr(self, '_copies', None)
        return _renamed(result, *copies) if copies else result


def _renamed(value, remote: str, src: str):
    if isinstance(value, str):
        return value.replace(remote, src)
    if isinstance(value, dict):
        return {k: _renamed(v, remote, src) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, remote, src) for v in value]
    return value
