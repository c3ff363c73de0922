#!/usr/bin/env bash
# Packaging smoke test: build sdist + wheel from a clean export of HEAD, install the wheel into a fresh
# venv (and `pip install .` of the checkout into another), then run the installed `rowhook` for real.
#   bash .ci/package_smoke.sh [DATABASE_URL]
# With no URL (argument or $ROWHOOK_DATABASE_URL) the smoke test starts its own embedded PostgreSQL.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-python3}"
url="${1:-${ROWHOOK_DATABASE_URL:-}}"
work="$(mktemp -d -t rowhook-package-XXXXXX)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "clean export of HEAD"
mkdir "$work/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" archive HEAD | tar -x -C "$work/src"
else
    cp -a "$repo/." "$work/src/"
fi

step "python -m build (sdist, then the wheel built from that sdist)"
"$python" -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install --quiet "build>=1.2"
"$work/build-venv/bin/python" -m build --outdir "$work/dist" "$work/src"
ls -l "$work/dist"
wheel="$(ls "$work"/dist/rowhook-*.whl)"
sdist="$(ls "$work"/dist/rowhook-*.tar.gz)"

step "the wheel carries sql/, every package and the portal's files; the sdist carries sql/"
"$work/build-venv/bin/python" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for needed in ("rowhook/sql/install.sql", "rowhook/sql/uninstall.sql",
               "rowhook/sql/migrations/0001_schema.sql", "rowhook/cli.py", "relay/__init__.py", "api/__init__.py",
               "api/portal/index.html", "api/portal/portal.js", "api/portal/api.js", "api/portal/portal.css"):
    assert needed in names, f"wheel lacks {needed}"
assert any(n.startswith("rowhook/sql/queries/") for n in names), "wheel lacks sql/queries"
sdist = tarfile.open(sys.argv[2]).getnames()
assert any(n.endswith("/sql/install.sql") for n in sdist), "sdist lacks sql/install.sql"
print(f"wheel: {len(names)} files; sdist: {len(sdist)} files")
PY

step "install the wheel into a fresh venv"
"$python" -m venv "$work/wheel-venv"
"$work/wheel-venv/bin/pip" install --quiet "$wheel"
# Run from a directory without a checkout, so nothing can come from the source tree.
(cd "$work" && "$work/wheel-venv/bin/python" "$here/package_smoke.py" "$work/wheel-venv/bin/rowhook" $url)

step "pip install . from the clean checkout into another fresh venv"
"$python" -m venv "$work/checkout-venv"
"$work/checkout-venv/bin/pip" install --quiet "$work/src"
(cd "$work" && "$work/checkout-venv/bin/python" "$here/package_smoke.py" "$work/checkout-venv/bin/rowhook" $url)

step "package smoke test passed"
