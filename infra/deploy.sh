#!/usr/bin/env bash
# Deploys (or updates) the executor stack infra/squall.yaml with the AWS CLI:
# builds the zip with infra/package.sh (or takes --zip), uploads it under
# s3://CODE_BUCKET/squall-code/STACK/ keyed by its SHA-256 (so a new build
# updates the function and an unchanged one does not), creates or updates the
# stack, waits for it, and prints the squall flags from its outputs.
#
#   infra/deploy.sh --code-bucket BUCKET [--stack squall] [--arch x86_64|arm64]
#                   [--zip FILE] [--param Key=Value ...]
#
# --param passes a template parameter (BucketName=existing-bucket,
# MemorySize=4096, ReservedConcurrency=200, ...; see infra/squall.yaml).
# The AWS CLI is `aws` on PATH, else AWS CLI v1 from PyPI installed under
# ~/.cache/squall/tools. AWS_ENDPOINT_URL points it at LocalStack.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/aws.sh
source "$ROOT/infra/aws.sh"

STACK=squall
ARCH=x86_64
ZIP=""
CODE_BUCKET=""
PARAMS=()
die() { echo "infra/deploy.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stack) STACK="${2:?--stack takes a name}"; shift 2 ;;
        --arch) ARCH="${2:?--arch takes x86_64 or arm64}"; shift 2 ;;
        --zip) ZIP="${2:?--zip takes a file}"; shift 2 ;;
        --code-bucket) CODE_BUCKET="${2:?--code-bucket takes a bucket}"; shift 2 ;;
        --param) [[ "${2:-}" == *=* ]] || die "--param takes Key=Value, not '${2:-}'"
                 PARAMS+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
done
[[ -n "$CODE_BUCKET" ]] || die "--code-bucket BUCKET is required (an existing bucket for the function's zip)"
[[ "$STACK" =~ ^[A-Za-z][A-Za-z0-9-]{0,127}$ ]] || die "--stack '$STACK' is not a stack name"
case "$ARCH" in x86_64|arm64) ;; *) die "--arch takes x86_64 or arm64, not '$ARCH'" ;; esac

if [[ -z "$ZIP" ]]; then
    "$ROOT/infra/package.sh" --arch "$ARCH"
    ZIP="$ROOT/infra/dist/squall-lambda-$ARCH.zip"
fi
[[ -f "$ZIP" ]] || die "no zip at $ZIP"
SHA="$(sha256sum "$ZIP" | cut -c1-16)"
KEY="squall-code/$STACK/squall-lambda-$ARCH-$SHA.zip"
aws_cli s3 cp --only-show-errors "$ZIP" "s3://$CODE_BUCKET/$KEY"
echo "infra/deploy.sh: uploaded $ZIP to s3://$CODE_BUCKET/$KEY" >&2

OVERRIDES=("CodeBucket=$CODE_BUCKET" "CodeKey=$KEY" "Architecture=$ARCH" "${PARAMS[@]}")
TEMPLATE="file://$ROOT/infra/squall.yaml"
AS_PARAMETERS=()
for kv in "${OVERRIDES[@]}"; do
    AS_PARAMETERS+=("ParameterKey=${kv%%=*},ParameterValue=${kv#*=}")
done
if aws_cli cloudformation describe-stacks --stack-name "$STACK" >/dev/null 2>&1; then
    ACTION=update
    out="$(aws_cli cloudformation update-stack --stack-name "$STACK" --template-body "$TEMPLATE" \
        --capabilities CAPABILITY_IAM --parameters "${AS_PARAMETERS[@]}" 2>&1)" || {
        grep -q "No updates are to be performed" <<< "$out" || { echo "$out" >&2; exit 1; }
        ACTION=none
    }
else
    ACTION=create
    aws_cli cloudformation create-stack --stack-name "$STACK" --template-body "$TEMPLATE" \
        --capabilities CAPABILITY_IAM --parameters "${AS_PARAMETERS[@]}" >/dev/null
fi
status="$(stack_wait "$STACK")"
case "$status" in
    CREATE_COMPLETE|UPDATE_COMPLETE) ;;
    *) if [[ "$ACTION" != none ]]; then
           echo "infra/deploy.sh: stack $STACK ended $status; its events:" >&2
           aws_cli cloudformation describe-stack-events --stack-name "$STACK" \
               --query 'StackEvents[?contains(ResourceStatus, `FAILED`)].[LogicalResourceId,ResourceStatusReason]' \
               --output text >&2 || true
           exit 1
       fi ;;
esac
echo "infra/deploy.sh: stack $STACK $status ($ACTION)" >&2
outputs="$(stack_outputs "$STACK")"
output() { output_value "$outputs" "$1"; }
echo "$outputs"
echo
echo "squall run --backend lambda --function $(output FunctionName) --function-count $(output FunctionCount) \\"
echo "  --work-dir $(output WorkDir) \\"
echo "  --table NAME=$(output DataUrl)NAME/ --sql '...'"
