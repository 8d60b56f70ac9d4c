# -*- coding: utf-8 -*-
# Copyright: ctkit contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of ctkit.netfilter.policy: copies `src`, and carries out confirm-or-rollback.

Without confirm_within the module simply runs. With it (and not in check mode):

1. the module is started asynchronously (async_wrapper), so that a policy that cuts the path cannot
   leave the controller waiting on a dead connection: ctkit arms its detached watcher, then applies;
2. its result is fetched with async_status over a fresh connection (the connection is reset first, so
   no persistent SSH master is reused: a new TCP connection has to get through the new policy);
3. the apply is confirmed with ctkit.netfilter.confirm, again from a fresh connection, before the
   deadline, retried while the host cannot be reached;
4. when no confirm got through in time, the host's watcher puts back what ctkit owned before. The
   plugin waits past the deadline, reaches the host again (the old policy let it in) and reports what
   the host's rollback log says: the task fails with rolled_back=true. A host that stays unreachable
   is reported unreachable.

As with community.general.iptables_state, keep the connection timeout (ansible_timeout) well below
confirm_within, so that a dropped connection attempt gives up in time to be retried.
"""
from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.utils.display import Display
from ansible_collections.ctkit.netfilter.plugins.plugin_utils.policy_action import PolicyAction

display = Display()

MODULE = 'ctkit.netfilter.policy'
CONFIRM = 'ctkit.netfilter.confirm'
POLL = 0.5  # seconds between attempts
MARGIN = 1.0  # a confirm must start this long before the deadline to count on arriving in time
REACH_AGAIN = 30.0  # after the deadline: how long to try to reach the host again to see its rollback


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
            seconds = args.get('confirm_within')
            if seconds is None or self._task.check_mode or args.get('state', 'present') == 'absent':
                wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
                result.update(self._execute_module(MODULE, module_args=args, task_vars=task_vars,
                                                   wrap_async=wrap_async))
                return self._cleanup(result)
            if self._task.async_val:
                raise AnsibleActionFail('confirm_within runs the apply asynchronously by itself: remove async/poll '
                                        'from this task')
            try:
                seconds = float(seconds)
            except (TypeError, ValueError):
                raise AnsibleActionFail('confirm_within must be a number of seconds') from None
            result.update(self._apply_and_confirm(args, seconds, task_vars))
            return self._cleanup(result)
        finally:
            try:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            except AnsibleConnectionFailure:
                pass  # the host cannot be reached: ansible's tmp directory stays there

    # ------------------------------------------------------------------ steps

    def _fresh(self):
        """Drop the connection (and a persistent SSH master), so the next command connects anew."""
        try:
            self._connection.reset()
        except AnsibleConnectionFailure:
            pass
        except AttributeError:
            display.warning('this connection plugin cannot reset its connection: the confirm may reuse it')

    def _module(self, name, args, task_vars):
        return self._execute_module(name, module_args=args, task_vars=task_vars, wrap_async=False)

    def _job(self, jid, mode, task_vars):
        return self._module('ansible.builtin.async_status',
                            {'jid': jid, 'mode': mode, '_async_dir': self._async_dir}, task_vars)

    def _apply_and_confirm(self, args, seconds, task_vars):
        self._async_dir = self.get_shell_option('async_dir', default='~/.ansible_async')
        where = {'netns': args.get('netns'), 'table': args.get('table') or 'ctkit'}
        limit = self._task.async_val
        self._task.async_val = int(max(60, 2 * seconds))  # async_wrapper's own time limit for the apply
        try:
            started = self._execute_module(MODULE, module_args=args, task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = limit
        if started.get('failed') or 'ansible_job_id' not in started:
            return started
        jid = started['ansible_job_id']
        launched = time.time()

        # 2. the apply's result, over fresh connections
        applied, lost = None, None
        while time.time() < launched + seconds:
            self._fresh()
            try:
                status = self._job(jid, 'status', task_vars)
            except AnsibleConnectionFailure as exc:
                lost = str(exc)
                time.sleep(POLL)
                continue
            if status.get('finished'):
                applied = status
                break
            time.sleep(POLL / 2)
        if applied is None:
            # never heard back: the apply ran (or runs) and armed the watcher, whose deadline is at
            # most `seconds` after the apply finished: wait for it, then look
            return self._after_deadline(None, time.time() + seconds, lost or 'the apply did not finish in time',
                                        jid, where, task_vars)
        seen = time.time()
        for key in ('ansible_job_id', 'finished', 'started', 'results_file', 'stdout', 'stderr',
                    'stdout_lines', 'stderr_lines'):
            applied.pop(key, None)
        self._cleanup_job(jid, task_vars)
        if applied.get('failed') or applied.get('rollback_at') is None:
            return applied  # nothing was armed: an invalid policy, a kernel error
        where['table'] = applied.get('table') or where['table']
        deadline = seen + max(0.0, float(applied.get('rollback_in', seconds)))

        # 3. confirm from a fresh connection, while there is time
        while time.time() < deadline - MARGIN:
            self._fresh()
            try:
                confirmed = self._module(CONFIRM, dict(where, action='confirm'), task_vars)
            except AnsibleConnectionFailure as exc:
                lost = str(exc)
                time.sleep(POLL)
                continue
            if confirmed.get('failed'):
                applied.update(failed=True, confirmed=False, rolled_back=False,
                               msg='applied, but the confirm failed: %s' % confirmed.get('msg'))
                return applied
            applied.update(confirmed=bool(confirmed.get('done')), rolled_back=not confirmed.get('done'),
                           rollback_event=confirmed.get('last_event'))
            if not confirmed.get('done'):  # the watcher was quicker
                applied.update(failed=True, changed=False,
                               msg='the confirm came too late, the host rolled itself back: %s'
                                   % confirmed.get('message'))
            return applied
        return self._after_deadline(applied, deadline, lost or 'no time left to confirm', None, where, task_vars)

    def _cleanup_job(self, jid, task_vars):
        try:
            self._job(jid, 'cleanup', task_vars)
        except AnsibleConnectionFailure:
            pass

    def _after_deadline(self, applied, deadline, lost, jid, where, task_vars):
        """Not confirmed: the host rolls itself back at the deadline. Wait for it and reach the host again."""
        result = dict(applied or {}, changed=False, confirmed=False, failed=True)
        pause = deadline + MARGIN - time.time()
        display.vv('ctkit: cannot confirm the apply (%s); waiting %.0f s for the host to roll back' % (lost, pause))
        if pause > 0:
            time.sleep(pause)
        give_up = time.time() + REACH_AGAIN
        while True:
            self._fresh()
            try:
                status = self._module(CONFIRM, dict(where, action='status'), task_vars)
                break
            except AnsibleConnectionFailure as exc:
                if time.time() > give_up:
                    result.update(unreachable=True, rolled_back=None, msg=(
                        'could not confirm the apply from a fresh connection (%s), and the host is still '
                        'unreachable %.0f s after its rollback deadline: its watcher should have put back what '
                        'ctkit owned before (see /run/ctkit/*/rollback-%s.log on it): %s'
                        % (lost, REACH_AGAIN, where['table'], exc)))
                    return result
                time.sleep(POLL)
        if jid is not None:  # the apply's own result, which the lost connection kept from us
            try:
                job = self._job(jid, 'status', task_vars)
                if job.get('finished'):
                    result['apply'] = dict((k, v) for k, v in job.items() if k in (
                        'changed', 'plan', 'summary', 'rollback_at', 'msg', 'failed'))
                self._cleanup_job(jid, task_vars)
            except AnsibleConnectionFailure:
                pass
        event = status.get('last_event') or ''
        rolled_back = not status.get('armed') and 'not confirmed in time' in event and 'rollback failed' not in event
        result.update(rolled_back=rolled_back, rollback_event=event)
        if rolled_back:
            result['msg'] = ('could not confirm the apply from a fresh connection (%s): the host rolled itself '
                             'back to what ctkit owned before: %s' % (lost, event))
        elif status.get('armed'):
            result['msg'] = ('could not confirm the apply (%s), and its rollback is still armed after the deadline '
                             '(%s): check the host' % (lost, event))
        else:
            result['msg'] = 'could not confirm the apply (%s); the host says: %s' % (lost, event or 'nothing')
        return result
