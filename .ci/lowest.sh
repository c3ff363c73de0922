#!/usr/bin/env bash
# CI leg: the lowest versions pyproject.toml allows. Every runtime dependency is pinned to its floor
# (`>=X` -> `==X`, by .ci/lowest_constraints.py) in a venv of its own; the test tools resolve freely.
# Then the unit tests and a short subset of integration tests run there: a floor that is not true fails.
#   bash .ci/lowest.sh [DATABASE_URL]   (default: $ROWHOOK_TEST_DATABASE_URL, else embedded PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
venv="${LOWEST_VENV:-.venv-lowest}"
constraints="$(mktemp -t rowhook-floors-XXXXXX.txt)"
trap 'rm -f "$constraints"' EXIT

python3 .ci/lowest_constraints.py > "$constraints"
echo "pins:"; sed 's/^/  /' "$constraints"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -c "$constraints" -e '.[test]'
# Prove the pins took: each pinned package is installed at exactly its floor.
"$venv/bin/python" - "$constraints" <<'PY'
import sys
from importlib.metadata import version
from packaging.version import Version
for line in open(sys.argv[1]):
    name, floor = line.strip().split("==")
    assert Version(version(name)) == Version(floor), f"{name} {version(name)} installed, floor is {floor}"
PY
if [ -n "${1:-}" ]; then export ROWHOOK_TEST_DATABASE_URL="$1"; fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit \
    tests/integration/test_api_subscriptions.py tests/integration/test_api_dns.py \
    tests/integration/test_api_quotas.py tests/integration/test_relay_delivery.py \
    tests/integration/test_migrations.py tests/integration/test_prune.py
echo "lowest allowed versions passed"
