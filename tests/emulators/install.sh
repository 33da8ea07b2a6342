#!/usr/bin/env bash
# Installs the AWS emulators the Lambda/S3 tests need, without Docker, from the
# package registries this project may reach (crates.io, PyPI):
#   - cargo-lambda (its prebuilt binary from PyPI; built from crates.io where no
#     wheel fits): `cargo lambda watch` runs squall-lambda behind the Lambda
#     Invoke API;
#   - LocalStack in host mode (PyPI, Python 3.13 from pyenv): S3, and the
#     Lambda/IAM control APIs the localstack/ init hook calls.
# Everything lands under $SQUALL_CACHE (default ~/.cache/squall) and is reused
# by later runs: a second run only checks versions. Safe to run concurrently
# with nothing else; safe to re-run after a failure (a half-built venv is redone).
set -euo pipefail

CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
TOOLS="$CACHE/tools"
CARGO_LAMBDA_VERSION=1.9.2
LOCALSTACK_VERSION=2026.3.0
PYTHON_VERSION=3.13.0
SCHEMATHESIS_VERSION=4.32.5
CFN_LINT_VERSION=1.58.0
# Debian's prometheus package (bookworm): only its promtool is used.
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+b6
SELENIUM_VERSION=4.50.0
# The reference engine tests/bench/duckdb_tpch.py times (tests/bench/duckdb_check.sh).
DUCKDB_VERSION=2.0.1
# The Flight SQL client tests/flight/adbc_check.py drives (tests/tests/flight_sql.rs):
# ADBC's Flight SQL driver and driver manager, and pyarrow, from PyPI.
ADBC_VERSION=1.13.0
PYARROW_VERSION=26.0.1
# Single-node DataFusion, one process per query (tests/bench/one_process.py):
# the Python package of the version line Squall's engine uses. Not in "all".
DATAFUSION_PYTHON_VERSION=55.0.0
# gRPC for the OTLP receiver of tests/bench/tracing_cost.sh (otlp_sink.py). Not in "all".
GRPCIO_VERSION=1.85.1

log() { echo "squall emulators: $*" >&2; }

install_cargo_lambda() {
    local bin="$TOOLS/bin/cargo-lambda"
    if [[ -x "$bin" ]] && "$bin" lambda --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION"; then
        log "cargo-lambda $CARGO_LAMBDA_VERSION already installed ($bin)"
        return
    fi
    mkdir -p "$TOOLS/bin"
    # PyPI has cargo-lambda's prebuilt binary (seconds); building it from
    # crates.io takes about 25 minutes on 2 cores, so that is only the fallback
    # (a platform without a wheel).
    local venv="$TOOLS/cargo-lambda-$CARGO_LAMBDA_VERSION"
    log "installing cargo-lambda $CARGO_LAMBDA_VERSION from PyPI into $venv"
    rm -rf "$venv"
    if "$(find_python)" -m venv "$venv" \
        && "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION" \
        && "$venv/bin/cargo-lambda" lambda --version | grep -q "$CARGO_LAMBDA_VERSION"; then
        ln -sf "$venv/bin/cargo-lambda" "$bin"
        return
    fi
    rm -rf "$venv"
    log "no cargo-lambda wheel here: building it from crates.io (about 25 minutes on 2 cores; cached afterwards)"
    # A target directory of its own, so the install never fights the project's
    # build over a lock, and a partial build is resumed by the next run.
    CARGO_TARGET_DIR="$TOOLS/build/cargo-lambda" \
        cargo install cargo-lambda --version "$CARGO_LAMBDA_VERSION" --locked --root "$TOOLS"
    rm -rf "$TOOLS/build/cargo-lambda"
}

find_python() {
    if command -v pyenv >/dev/null && [[ -x "$(pyenv root)/versions/$PYTHON_VERSION/bin/python3" ]]; then
        echo "$(pyenv root)/versions/$PYTHON_VERSION/bin/python3"
    elif command -v "python${PYTHON_VERSION%.*}" >/dev/null; then
        command -v "python${PYTHON_VERSION%.*}"
    elif command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
        command -v python3
    else
        log "LocalStack needs Python ${PYTHON_VERSION%.*} (pyenv install $PYTHON_VERSION)"
        return 1
    fi
}

install_localstack() {
    local venv="$TOOLS/localstack-$LOCALSTACK_VERSION"
    if [[ -f "$venv/.complete" ]]; then
        log "LocalStack $LOCALSTACK_VERSION already installed ($venv)"
        return
    fi
    log "installing LocalStack $LOCALSTACK_VERSION (host mode) into $venv"
    rm -rf "$venv"
    "$(find_python)" -m venv "$venv"
    # Pins that start on this machine (see shared/EMULATORS.md): cbor2 6, pyOpenSSL 26
    # and a missing service_identity each break start-up. boto3/awscli-local are not
    # needed: the init hook is run with the AWS CLI-free Python in localstack/.
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "localstack-core[runtime]==$LOCALSTACK_VERSION" 'cbor2<6' 'cryptography>=45,<47' \
        'pyopenssl>=25,<26' service_identity boto3
    touch "$venv/.complete"
}

# A Python tool from PyPI in a venv of its own, TOOLS/NAME-VERSION (with any
# further pinned packages given after the version), marked complete only once
# pip succeeded (a half-built venv is redone).
install_pip_tool() {
    local name="$1" version="$2" venv="$TOOLS/$1-$2"
    shift 2
    if [[ -f "$venv/.complete" ]]; then
        log "$name $version already installed ($venv)"
        return
    fi
    log "installing $name $version into $venv"
    rm -rf "$venv"
    "$(find_python)" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$name==$version" "$@"
    touch "$venv/.complete"
}

# Not emulators, but installed the same way: the API fuzzer
# tests/api/schemathesis.sh runs, and the linter of infra/squall.yaml
# (tests/infra/lint.sh).
install_schemathesis() { install_pip_tool schemathesis "$SCHEMATHESIS_VERSION"; }
install_cfn_lint() { install_pip_tool cfn-lint "$CFN_LINT_VERSION"; }
install_duckdb() { install_pip_tool duckdb "$DUCKDB_VERSION"; }
install_adbc() {
    install_pip_tool adbc-driver-flightsql "$ADBC_VERSION" \
        "adbc-driver-manager==$ADBC_VERSION" "pyarrow==$PYARROW_VERSION"
}

# The console's browser test (tests/console/drive.py): Selenium from PyPI,
# driving Debian's chromium through its chromium-driver (installed with apt
# where missing; the test needs root for that, as CI has).
install_browser() {
    install_pip_tool selenium "$SELENIUM_VERSION"
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then return; fi
    log "installing chromium and chromium-driver (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
}

# promtool, which checks and unit-tests infra/prometheus/squall-rules.yml
# (tests/infra/promql.sh): taken out of Debian's prometheus package with
# apt-get download and dpkg-deb, nothing installed system-wide.
install_promtool() {
    local dir="$TOOLS/promtool-$PROMETHEUS_DEB_VERSION"
    if [ -x "$dir/promtool" ]; then return; fi
    log "installing promtool from Debian's prometheus $PROMETHEUS_DEB_VERSION"
    local work
    work="$(mktemp -d)"
    (
        cd "$work"
        apt-get download "prometheus=$PROMETHEUS_DEB_VERSION" 2>/dev/null \
            || { apt-get update -qq && apt-get download "prometheus=$PROMETHEUS_DEB_VERSION"; }
        dpkg-deb -x prometheus_*.deb extracted
    )
    mkdir -p "$dir"
    cp "$work/extracted/usr/bin/promtool" "$dir/promtool"
    rm -rf "$work"
    "$dir/promtool" --version >/dev/null
}

mkdir -p "$TOOLS"
case "${1:-all}" in
    cargo-lambda) install_cargo_lambda ;;
    localstack) install_localstack ;;
    schemathesis) install_schemathesis ;;
    cfn-lint) install_cfn_lint ;;
    promtool) install_promtool ;;
    browser) install_browser ;;
    duckdb) install_duckdb ;;
    adbc) install_adbc ;;
    datafusion) install_pip_tool datafusion "$DATAFUSION_PYTHON_VERSION" ;;
    grpcio) install_pip_tool grpcio "$GRPCIO_VERSION" ;;
    all) install_localstack; install_schemathesis; install_cfn_lint; install_duckdb; install_adbc; install_promtool; install_browser; install_cargo_lambda ;;
    *) log "unknown component '$1' (cargo-lambda, localstack, schemathesis, cfn-lint, duckdb, adbc, datafusion, grpcio, promtool, browser or all)"; exit 2 ;;
esac
