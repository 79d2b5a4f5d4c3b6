#!/usr/bin/env bash
# Re-resolves the project's dependencies in a fresh virtual environment and writes requirements/constraints.txt.
# Run it after changing the dependencies in pyproject.toml, then commit the result; CI installs with it.
# The bench extra is pinned too. Extra arguments are passed to pip as hints for the resolver (e.g. "botocore<1.43.118" when two packages disagree).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[dev,bench]' "$@"
{
  echo "# Exact versions CI and a developer install resolve to, so a new release on PyPI can neither break nor stall"
  echo "# the install. Use: pip install -c requirements/constraints.txt -e '.[dev]'"
  echo "# Written by requirements/freeze.sh on $(date -u +%F); re-run it after changing pyproject.toml."
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v '^xmodal'
} > requirements/constraints.txt
rm -rf "$(dirname "$venv")"
