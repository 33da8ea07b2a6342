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

# The Grafana dashboard (infra/grafana/squall-dashboard.json): every panel's
# query must parse. promtool parses rules, so each query becomes one recording
# rule of a throw-away file. (That they name only metrics /metrics has or the
# rules record is checked by tests/tests/service.rs against a real scrape.)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$ROOT/infra/grafana/squall-dashboard.json" "$work/dashboard-rules.yml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
rules, problems = [], []
for panel in dashboard["panels"]:
    title = panel.get("title") or f"panel {panel.get('id')}"
    targets = panel.get("targets") or []
    if not targets:
        problems.append(f"{title}: no query")
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"{title}: not on the dashboard's datasource variable")
    for target in targets:
        expr = target.get("expr", "").strip()
        if not expr:
            problems.append(f"{title} {target.get('refId')}: empty query")
            continue
        rules.append((f"{title} {target.get('refId')}", expr))
if problems:
    sys.exit("dashboard: " + "; ".join(problems))
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (where, expr) in enumerate(rules):
        # JSON strings are YAML strings: no quoting to get wrong.
        out.write(f"      - record: squall_dashboard:query_{i}\n")
        out.write(f"        expr: {json.dumps(expr)}\n")
print(f"dashboard: {len(dashboard['panels'])} panels, {len(rules)} queries")
PY
"$PROMTOOL" check rules "$work/dashboard-rules.yml"
echo "squall infra: every dashboard query parses"
