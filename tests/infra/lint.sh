#!/usr/bin/env bash
# Lints the CloudFormation stack (infra/squall.yaml) with cfn-lint, then checks
# what cfn-lint cannot know (tests/infra/check_template.py: a least-privilege
# executor policy, the work prefix expiring, log retention, the function's
# settings as parameters). cfn-lint comes from tests/emulators/install.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
VERSION="$(sed -n 's/^CFN_LINT_VERSION=//p' "$ROOT/tests/emulators/install.sh")"
VENV="$CACHE/tools/cfn-lint-$VERSION"
"$ROOT/tests/emulators/install.sh" cfn-lint   # a no-op once installed
"$VENV/bin/cfn-lint" "$ROOT/infra/squall.yaml"
echo "squall infra: cfn-lint clean ($("$VENV/bin/cfn-lint" --version))"
"$VENV/bin/python" "$ROOT/tests/infra/check_template.py" "$ROOT/infra/squall.yaml"
