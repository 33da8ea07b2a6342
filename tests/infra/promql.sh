#!/usr/bin/env bash
# Checks the service-level recording and alerting rules
# (infra/prometheus/squall-rules.yml) with promtool, and runs their unit tests
# (squall-rules.test.yml: synthetic series, the SLIs worked out by hand, the
# alerts that must fire). That the metrics they name exist in a real scrape is
# checked by tests/tests/service.rs. promtool comes from tests/emulators/install.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
VERSION="$(sed -n 's/^PROMETHEUS_DEB_VERSION=//p' "$ROOT/tests/emulators/install.sh")"
PROMTOOL="$CACHE/tools/promtool-$VERSION/promtool"
"$ROOT/tests/emulators/install.sh" promtool   # a no-op once installed
cd "$ROOT/infra/prometheus"
"$PROMTOOL" check rules squall-rules.yml
"$PROMTOOL" test rules squall-rules.test.yml
echo "squall infra: PromQL rules checked and their unit tests passed"
