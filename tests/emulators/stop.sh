#!/usr/bin/env bash
# Stops what tests/emulators/start.sh started (and only that), and removes its
# LocalStack state. Safe to run when nothing is running.
set -uo pipefail
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
RUN="${SQUALL_EMULATORS_RUN:-$CACHE/run}"

stop() { # NAME PIDFILE
    [[ -f "$2" ]] || return 0
    local pid; pid="$(cat "$2")"
    if kill -0 "$pid" 2>/dev/null; then
        # Each was started as the leader of its own process group, with its
        # children (cargo lambda's function processes, LocalStack's workers) in it.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        echo "squall emulators: stopped $1 (pid $pid)" >&2
    fi
    rm -f "$2"
}

stop "cargo lambda watch" "$RUN/lambda.pid"
stop LocalStack "$RUN/localstack.pid"
rm -rf "$RUN/localstack" "$RUN/env" "$RUN/squall-lambda.zip"
