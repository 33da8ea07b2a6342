#!/usr/bin/env bash
# Starts the AWS emulators for the Lambda/S3 tests and waits until they answer:
#   - LocalStack in host mode on 127.0.0.1:$SQUALL_S3_PORT (S3, and the Lambda/IAM
#     control APIs that localstack/init/ready.d/squall_init.py calls);
#   - `cargo lambda watch` on 127.0.0.1:$SQUALL_LAMBDA_PORT, running this
#     workspace's squall-lambda binary behind the Lambda Invoke API.
# Then runs the LocalStack init hook (bucket + function), exactly as a Docker
# LocalStack would, and writes the variables the tests read to
# $SQUALL_EMULATORS_RUN/env (source it). tests/emulators/stop.sh stops both.
# Install first with tests/emulators/install.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
TOOLS="$CACHE/tools"
RUN="${SQUALL_EMULATORS_RUN:-$CACHE/run}"
S3_PORT="${SQUALL_S3_PORT:-4566}"
LAMBDA_PORT="${SQUALL_LAMBDA_PORT:-9001}"
# Where the function exports its spans (the trace test's receiver listens
# there; without it, nothing is sent: the function continues traces only).
OTLP_PORT="${SQUALL_OTLP_PORT:-14317}"
CONCURRENCY="${SQUALL_LAMBDA_CONCURRENCY:-8}"
BUCKET="${SQUALL_TEST_BUCKET:-squall-test}"
FUNCTION=squall-lambda
LOCALSTACK_VENV="$TOOLS/localstack-2026.3.0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { echo "squall emulators: $*" >&2; }
die() { log "$*"; exit 1; }

[[ -x "$TOOLS/bin/cargo-lambda" ]] || die "cargo-lambda is not installed: run tests/emulators/install.sh"
[[ -f "$LOCALSTACK_VENV/.complete" ]] || die "LocalStack is not installed: run tests/emulators/install.sh"
if [[ -f "$RUN/localstack.pid" || -f "$RUN/lambda.pid" ]]; then
    log "stopping emulators left from an earlier run"
    "$ROOT/tests/emulators/stop.sh"
fi
mkdir -p "$RUN"
rm -rf "$RUN/localstack"
mkdir -p "$RUN/localstack/fs" "$RUN/localstack/vol"

# Test credentials and endpoints: the emulators accept any keys.
AWS_ENV=(
    AWS_REGION=us-east-1
    AWS_ACCESS_KEY_ID=test
    AWS_SECRET_ACCESS_KEY=test
    AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
    AWS_ALLOW_HTTP=true
)

wait_for() { # NAME URL LOGFILE PIDFILE SECONDS
    local deadline=$(( $(date +%s) + $5 ))
    until curl -s -o /dev/null "$2"; do
        if ! kill -0 "$(cat "$4")" 2>/dev/null; then
            tail -20 "$3" >&2
            die "$1 exited during start-up (log: $3)"
        fi
        (( $(date +%s) < deadline )) || { tail -20 "$3" >&2; die "$1 did not answer on $2 within $5 s"; }
        sleep 0.5
    done
}

log "starting LocalStack (host mode) on 127.0.0.1:$S3_PORT"
(
    cd "$RUN/localstack"
    # CloudFormation and Logs for the stack check (tests/infra/deploy_check.sh);
    # a Lambda runtime executor that runs nothing, so that functions reach
    # Active without Docker (localstack/noop-runtime/; invocations go to cargo
    # lambda watch).
    exec setsid env OVERRIDE_IN_DOCKER=0 GATEWAY_LISTEN="127.0.0.1:$S3_PORT" \
        SERVICES=s3,lambda,iam,sts,cloudformation,logs FILESYSTEM_ROOT="$RUN/localstack/fs" \
        LAMBDA_RUNTIME_EXECUTOR=noop PYTHONPATH="$ROOT/localstack/noop-runtime" \
        LOCALSTACK_VOLUME_DIR="$RUN/localstack/vol" SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
        "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main
) > "$RUN/localstack.log" 2>&1 &
echo $! > "$RUN/localstack.pid"

# cargo lambda watch runs the function with `cargo run`: build it first, so the
# first invocation does not wait for a compile.
log "building squall-lambda"
# The same features as tests/run's build, so nothing is built twice.
FEATURES=(--features squall-executor/fault-injection,squall-executor/lambda)
(cd "$ROOT" && cargo build --quiet --bin squall-lambda "${FEATURES[@]}")

log "starting cargo lambda watch on 127.0.0.1:$LAMBDA_PORT (concurrency $CONCURRENCY)"
FUNCTION_ENV=()
for kv in "${AWS_ENV[@]}"; do FUNCTION_ENV+=(--env-var "$kv"); done
(
    cd "$ROOT"
    exec setsid "$TOOLS/bin/cargo-lambda" lambda watch --quiet --ignore-changes \
        -A 127.0.0.1 -P "$LAMBDA_PORT" --concurrency "$CONCURRENCY" \
        --bin squall-lambda "${FEATURES[@]}" "${FUNCTION_ENV[@]}" --env-var SQUALL_LOG=warn \
        --env-var OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
) > "$RUN/lambda.log" 2>&1 &
echo $! > "$RUN/lambda.pid"

wait_for LocalStack "http://127.0.0.1:$S3_PORT/_localstack/health" "$RUN/localstack.log" "$RUN/localstack.pid" 120
wait_for "cargo lambda watch" "http://127.0.0.1:$LAMBDA_PORT/" "$RUN/lambda.log" "$RUN/lambda.pid" 120

# The init hook a Docker LocalStack runs from ready.d, against host mode: creates
# the bucket and deploys the executor (host mode accepts CreateFunction but cannot
# run functions; cargo lambda watch runs them instead).
log "running the LocalStack init hook"
ZIP="$RUN/squall-lambda.zip"
cp "$CARGO_TARGET_DIR/debug/squall-lambda" "$RUN/bootstrap"
strip "$RUN/bootstrap"
rm -f "$ZIP"
(cd "$RUN" && zip -q -j "$ZIP" bootstrap && rm -f bootstrap)
init_hook() {
    env "${AWS_ENV[@]}" SQUALL_BUCKET="$BUCKET" SQUALL_FUNCTION=squall-executor \
        SQUALL_LAMBDA_ZIP="$ZIP" SQUALL_EXPECT_ACTIVE=0 \
        "$LOCALSTACK_VENV/bin/python" "$ROOT/localstack/init/ready.d/squall_init.py"
}
init_hook
# LocalStack may run the hook again (a restart with persistence): it must change nothing.
again="$(init_hook 2>&1)" || die "the init hook failed on its second run: $again"
grep -q "function squall-executor is up to date" <<< "$again" \
    || die "the init hook is not idempotent; second run said: $again"

cat > "$RUN/env" <<ENV
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true
export SQUALL_TEST_BUCKET=$BUCKET
export SQUALL_TEST_LAMBDA_ENDPOINT=http://127.0.0.1:$LAMBDA_PORT
export SQUALL_TEST_LAMBDA_FUNCTION=$FUNCTION
export SQUALL_TEST_LAMBDA_CONCURRENCY=$CONCURRENCY
export SQUALL_TEST_LOCALSTACK_FUNCTION=squall-executor
export SQUALL_TEST_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_PORT
ENV
log "ready: source $RUN/env"
