# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of ctkit.netfilter.audit: copies `src` from the controller, then runs the module."""
from __future__ import annotations

from ansible.errors import AnsibleConnectionFailure
from ansible_collections.ctkit.netfilter.plugins.plugin_utils.policy_action import PolicyAction


class ActionModule(PolicyAction):

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        self._supports_async = True
        result = super().run(tmp, task_vars)
        del tmp
        if result.get('skipped'):
            return result
        try:
            args = self._policy_args()
            wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
            result.update(self._execute_module('ctkit.netfilter.audit', module_args=args, task_vars=task_vars,
                                               wrap_async=wrap_async))
            return self._cleanup(result)
        finally:
            try:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            except AnsibleConnectionFailure:
                pass
