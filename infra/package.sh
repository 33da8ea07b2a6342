#!/usr/bin/env bash
# Builds the executor function (squall-lambda) as a Lambda zip for the
# provided.al2023 runtime:
#
#   infra/package.sh [--arch x86_64|arm64|all] [--out DIR]      (default: x86_64, infra/dist)
#
# For each architecture: a release build linked against glibc 2.34 (AL2023's)
# with cargo-lambda and zig (zig from PyPI's `ziglang`, installed into the cache
# on first use), a check that the binary needs no newer glibc, and
# DIR/squall-lambda-ARCH.zip holding `bootstrap`, with its sizes against Lambda's
# limits (50 MB zipped for a direct upload, 250 MB unzipped). The build is the
# release profile without the fault-injection feature the emulator tests use.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SQUALL_CACHE:-$HOME/.cache/squall}"
TOOLS="$CACHE/tools"
ZIG_VERSION=0.13.0
GLIBC_MAX=2.34
ZIP_LIMIT=$((50 * 1000 * 1000))
UNZIPPED_LIMIT=$((250 * 1000 * 1000))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

ARCHES=(x86_64)
OUT="$ROOT/infra/dist"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch)
            case "${2:-}" in
                x86_64|arm64) ARCHES=("$2") ;;
                all) ARCHES=(x86_64 arm64) ;;
                *) echo "infra/package.sh: --arch takes x86_64, arm64 or all, not '${2:-}'" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "infra/package.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "squall package: $*" >&2; }
die() { log "$*"; exit 1; }

"$ROOT/tests/emulators/install.sh" cargo-lambda
CARGO_LAMBDA="$TOOLS/bin/cargo-lambda"

# zig from PyPI, in a venv of its own; cargo-lambda finds `zig` on PATH.
ZIG_VENV="$TOOLS/ziglang-$ZIG_VERSION"
if [[ ! -f "$ZIG_VENV/.complete" ]]; then
    log "installing zig $ZIG_VERSION from PyPI (ziglang)"
    rm -rf "$ZIG_VENV"
    python3 -m venv "$ZIG_VENV"
    "$ZIG_VENV/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION"
    mkdir -p "$ZIG_VENV/shim"
    printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$ZIG_VENV/bin/python" > "$ZIG_VENV/shim/zig"
    chmod +x "$ZIG_VENV/shim/zig"
    touch "$ZIG_VENV/.complete"
fi
export PATH="$ZIG_VENV/shim:$PATH"

mkdir -p "$OUT"
failed=0
for arch in "${ARCHES[@]}"; do
    case "$arch" in
        x86_64) triple=x86_64-unknown-linux-gnu ;;
        arm64) triple=aarch64-unknown-linux-gnu ;;
    esac
    if [[ ! -d "$(rustc --print sysroot)/lib/rustlib/$triple" ]]; then
        log "$arch: the Rust standard library for $triple is not installed (rustup target add $triple); skipped"
        failed=1
        continue
    fi
    log "$arch: building squall-lambda (release, glibc $GLIBC_MAX)"
    (cd "$ROOT" && "$CARGO_LAMBDA" lambda build --release --quiet --bin squall-lambda --features squall-executor/lambda \
        --target "$triple.$GLIBC_MAX")
    bin="$CARGO_TARGET_DIR/lambda/squall-lambda/bootstrap"
    [[ -f "$bin" ]] || die "$arch: the build left no $bin"
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' EXIT
    cp "$bin" "$stage/bootstrap"
    # The host's strip handles the host's architecture; llvm-strip any.
    if ! { strip "$stage/bootstrap" 2>/dev/null || llvm-strip "$stage/bootstrap" 2>/dev/null; }; then
        log "$arch: no strip for this architecture here; packaging the binary as built"
    fi
    newest="$(objdump -T "$stage/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
    if [[ "$(printf '%s\n%s\n' "$newest" "$GLIBC_MAX" | sort -V | tail -1)" != "$GLIBC_MAX" ]]; then
        die "$arch: the binary needs glibc $newest; AL2023 has $GLIBC_MAX"
    fi
    zip_path="$OUT/squall-lambda-$arch.zip"
    rm -f "$zip_path"
    (cd "$stage" && zip -q -9 "$zip_path" bootstrap)
    unzipped=$(stat -c %s "$stage/bootstrap")
    zipped=$(stat -c %s "$zip_path")
    rm -rf "$stage"
    trap - EXIT
    printf 'squall package: %s: %s\n' "$arch" "$zip_path"
    printf '  glibc needed: %s (limit %s)\n' "$newest" "$GLIBC_MAX"
    printf '  unzipped: %6.1f MB of %d MB (%d%%)\n' "$(awk "BEGIN{print $unzipped/1e6}")" $((UNZIPPED_LIMIT / 1000000)) $((100 * unzipped / UNZIPPED_LIMIT))
    printf '  zipped:   %6.1f MB of %d MB for a direct upload (%d%%)\n' "$(awk "BEGIN{print $zipped/1e6}")" $((ZIP_LIMIT / 1000000)) $((100 * zipped / ZIP_LIMIT))
    if (( unzipped > UNZIPPED_LIMIT )); then
        die "$arch: $unzipped bytes unzipped is over Lambda's limit"
    fi
    if (( zipped > ZIP_LIMIT )); then
        log "$arch: over the direct-upload limit: deploy it through S3 (the LocalStack hook and infra do)"
    fi
done
exit $failed
