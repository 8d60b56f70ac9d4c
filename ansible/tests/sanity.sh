#!/bin/bash
# ansible-test sanity for ctkit.netfilter, on this machine's Python 3.11, without Docker or the internet.
#
#   bash ansible/tests/sanity.sh [TEST...]     (default: every sanity test)
#
# ansible-test builds one virtualenv per test without pip and bootstraps pip there with a script it
# downloads from ci-files.testing.ansible.com, which is not reachable here. The script it looks for
# in its cache is replaced by a stand-in that bootstraps pip with the interpreter's own ensurepip and
# then installs what ansible-test asked for from the package index (PyPI is reachable). ansible-test
# runs in its own virtualenv (/tmp/ctkit-ansible-test by default), so the project's .venv gets none
# of its linters.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
collection="$here/../ansible_collections/ctkit/netfilter"
venv=${ANSIBLE_TEST_VENV:-/tmp/ctkit-ansible-test}
core=$("$here/../../.venv/bin/python" -c 'import ansible; print(ansible.__version__)' 2>/dev/null || echo 2.19.14)
if [ ! -x "$venv/bin/ansible-test" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "ansible-core==$core"
fi
site=$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$site/_internal/python_requirements.py" | head -1)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
shim="$cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$shim" ] || ! grep -q 'ctkit stand-in' "$shim"; then
  cat > "$shim" <<'PY'
# ctkit stand-in for get-pip.py (ansible/tests/sanity.sh): ensurepip, then pip install ARGS from the index
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
os.environ.pop('PIP_CONFIG_FILE', None)  # ensurepip hides pip's configuration (index, certificates) in-process
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]  # get-pip.py's own options
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', *args]))
PY
fi
cd "$collection"
tests=()
for t in "$@"; do tests+=(--test "$t"); done
exec "$venv/bin/ansible-test" sanity --python 3.11 --local --requirements "${tests[@]}"
