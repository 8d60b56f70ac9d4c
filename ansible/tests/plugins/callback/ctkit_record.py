# Test support for ansible/tests: every task result as one JSON line, for the tests to read.
"""ctkit_record: appends {"host", "task", "status", "seconds", "result"} per task result to $CTKIT_RECORD.

`seconds` runs from the task's start on that host (v2_runner_on_start) to its result."""
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: ctkit_record
    type: aggregate
    short_description: task results as JSON lines (ctkit's tests)
    description: Appends one JSON object per task result to the file named by CTKIT_RECORD.
    author: ctkit contributors
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'ctkit_record'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._started = {}

    def v2_runner_on_start(self, host, task):
        self._started[(host.get_name(), task._uuid)] = time.monotonic()

    def _record(self, result, status):
        path = os.environ.get('CTKIT_RECORD')
        if not path:
            return
        host = getattr(result, 'host', None) or result._host
        task = getattr(result, 'task', None) or result._task
        data = result.result if hasattr(type(result), 'result') else result._result
        start = self._started.pop((host.get_name(), task._uuid), None)
        line = {'host': host.get_name(), 'task': task.get_name(), 'status': status,
                'seconds': None if start is None else round(time.monotonic() - start, 3), 'result': dict(data)}
        with open(path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(line, default=str) + '\n')

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')
