#!/usr/bin/env bash
# Deploys infra/squall.yaml to the running LocalStack (tests/emulators/start.sh,
# host mode with the no-op Lambda runtime) with infra/deploy.sh, checks that the
# stack reached CREATE_COMPLETE and that an update applies, runs a query with the
# stack's outputs (tables under its DataUrl, --work-dir its WorkDir; the
# invocations go to `cargo lambda watch`, since LocalStack runs no function
# here), then removes everything with infra/destroy.sh --delete-bucket, which
# fails if anything of the stack is left.
#
# What host mode does not apply through CloudFormation (bucket lifecycle rules,
# log retention, ephemeral storage, reserved concurrency) is checked in the
# template by tests/infra/lint.sh instead.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
RUN="${SQUALL_EMULATORS_RUN:-$CACHE/run}"
# shellcheck source=/dev/null
source "$RUN/env"
# shellcheck source=infra/aws.sh
source "$ROOT/infra/aws.sh"
# The pinned AWS CLI from PyPI, whatever `aws` is on PATH; installed once.
export SQUALL_AWS_FROM_PYPI=1
aws_cli --version >/dev/null
export SQUALL_AWS
export AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}"
SQUALL="${SQUALL_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/squall}"
[[ -x "$SQUALL" ]] || (cd "$ROOT" && cargo build --quiet --bin squall)
STACK="squall-ci-$$"
CODE_BUCKET="$SQUALL_TEST_BUCKET"
log() { echo "squall infra: $*" >&2; }

work="$(mktemp -d)"
cleanup() {
    "$ROOT/infra/destroy.sh" --stack "$STACK" --delete-bucket >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Any zip will do: LocalStack runs nothing here.
printf '#!/bin/sh\nexit 1\n' > "$work/bootstrap"
(cd "$work" && python3 -c "import zipfile; zipfile.ZipFile('code.zip', 'w').write('bootstrap')")

"$ROOT/infra/deploy.sh" --stack "$STACK" --code-bucket "$CODE_BUCKET" --zip "$work/code.zip" \
    --param FunctionName="$STACK" --param MemorySize=2048 > "$work/outputs"
output() { output_value "$(cat "$work/outputs")" "$1"; }
for key in Bucket FunctionName WorkDir DataUrl ResultUrl RoleArn; do
    [[ -n "$(output "$key")" ]] || { log "output $key missing"; exit 1; }
done
state="$(aws_cli lambda get-function --function-name "$(output FunctionName)" \
    --query 'Configuration.[State,MemorySize,Runtime]' --output text)"
[[ "$state" == $'Active\t2048\tprovided.al2023' ]] || { log "function is '$state'"; exit 1; }
if aws_cli lambda get-function --function-name "$STACK-2" >/dev/null 2>&1; then
    log "FunctionCount=1 deployed a second function"; exit 1
fi
log "stack $STACK CREATE_COMPLETE, function $(output FunctionName) Active"

"$ROOT/infra/deploy.sh" --stack "$STACK" --code-bucket "$CODE_BUCKET" --zip "$work/code.zip" \
    --param FunctionName="$STACK" --param MemorySize=3008 --param FunctionCount=3 \
    --param LogFormat=JSON --param OtlpEndpoint=http://localhost:4317 > "$work/outputs"
memory="$(aws_cli lambda get-function --function-name "$STACK" --query 'Configuration.MemorySize' --output text)"
[[ "$memory" == 3008 ]] || { log "the update left MemorySize at $memory"; exit 1; }
# JSON logs and the span exporter reach the function's configuration.
telemetry="$(aws_cli lambda get-function --function-name "$STACK" --output text \
    --query 'Configuration.[LoggingConfig.LogFormat,Environment.Variables.OTEL_EXPORTER_OTLP_ENDPOINT]')"
[[ "$telemetry" == $'JSON\thttp://localhost:4317' ]] || { log "log format and OTLP endpoint: '$telemetry'"; exit 1; }
# FunctionCount=3: two more copies, named as squall --function-count expects.
[[ "$(output FunctionCount)" == 3 ]] || { log "output FunctionCount is '$(output FunctionCount)'"; exit 1; }
for copy in "$STACK-2" "$STACK-3"; do
    copied="$(aws_cli lambda get-function --function-name "$copy" \
        --query 'Configuration.[State,MemorySize,Runtime]' --output text)"
    [[ "$copied" == $'Active\t3008\tprovided.al2023' ]] || { log "function $copy is '$copied'"; exit 1; }
done
if aws_cli lambda get-function --function-name "$STACK-4" >/dev/null 2>&1; then
    log "FunctionCount=3 deployed a fourth function"; exit 1
fi
log "stack $STACK updated (MemorySize 3008, FunctionCount 3: $STACK, $STACK-2, $STACK-3)"

tables="$(output DataUrl)tpch"
"$SQUALL" tpch --scale 0.01 --out "$tables" 2>/dev/null
rows="$("$SQUALL" run --backend lambda --function "$SQUALL_TEST_LAMBDA_FUNCTION" \
    --lambda-endpoint "$SQUALL_TEST_LAMBDA_ENDPOINT" --work-dir "$(output WorkDir)" \
    --table "lineitem=$tables/lineitem/" --format csv \
    --sql "SELECT count(*) AS n FROM lineitem WHERE l_returnflag = 'R' AND l_shipdate <= DATE '1998-09-02'")"
# The reference: TPC-H Q1's count_order of the 'R' rows (same filter) at SF 0.01.
expected="$(awk -F'|' 'NR > 1 && $1 == "R" {n += $10} END {print n}' "$ROOT/tests/tpch/answers/sf0.01/q01.csv")"
[[ "$rows" == $'n\n'"$expected" ]] || { log "query through the stack's names gave '$rows', not $expected"; exit 1; }
log "query with the stack's outputs: $expected rows, as TPC-H's Q1 answer says"

trap - EXIT
"$ROOT/infra/destroy.sh" --stack "$STACK" --delete-bucket
rm -rf "$work"
