# Test support for ansible/tests: a local connection that needs a network path to the host first.
"""ctkit_probed_local: run like ansible.builtin.local, but only after a TCP connection attempt to the
host's address (ansible_host) from the control namespace gets an answer.

The namespace hosts of the lock-out test are managed with the modules' netns option over a local
connection, where no firewall can stand between the controller and the host. This plugin puts one
there, as SSH would have it: every command, file transfer and reset first opens a TCP connection
to ansible_host:CTKIT_PROBE_PORT from the namespace CTKIT_PROBE_NETNS (the "control" side, linked
to every host namespace by a veth pair). A refused connection (RST) proves the path is open; no
answer within CTKIT_PROBE_TIMEOUT seconds is AnsibleConnectionFailure, which is what the ssh
connection raises when a policy drops its packets.
"""
from __future__ import annotations

import errno
import os
import socket

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
    name: ctkit_probed_local
    short_description: local execution behind a probed network path (ctkit's tests)
    description:
        - Runs like ansible.builtin.local once a TCP attempt to ansible_host from the control namespace is answered.
    author: ctkit contributors
    options:
        become_success_timeout:
            type: int
            default: 10
            description: As ansible.builtin.local's.
            vars:
                - name: ansible_local_become_success_timeout
        become_strip_preamble:
            type: bool
            default: true
            description: As ansible.builtin.local's.
            vars:
                - name: ansible_local_become_strip_preamble
    extends_documentation_fragment:
        - connection_pipelining
"""


class Connection(LocalConnection):
    transport = 'ctkit_probed_local'

    def _probe(self):
        from ctkit.kernel.netns import entered  # the controller's Python runs ctkit too (the test venv)
        host = self._play_context.remote_addr
        port = int(os.environ.get('CTKIT_PROBE_PORT', '9'))
        timeout = float(os.environ.get('CTKIT_PROBE_TIMEOUT', '1'))
        with entered(os.environ['CTKIT_PROBE_NETNS']):  # the socket stays in the control namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return  # the host's kernel answered: the path is open
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED,):
                return
            raise AnsibleConnectionFailure('cannot reach %s:%d from the control side: %s' % (
                host, port, exc.strerror or 'timed out')) from None
        finally:
            sock.close()

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self._probe()
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)

    def put_file(self, in_path, out_path):
        self._probe()
        return super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._probe()
        return super().fetch_file(in_path, out_path)
