#!/usr/bin/env bash
# Removes what infra/deploy.sh made: the stack (function, role, log group),
# the zips it uploaded (s3://CODE_BUCKET/squall-code/STACK/), and, with
# --delete-bucket, the bucket the stack created (kept otherwise: the template
# retains it so that deleting the stack never deletes data). An existing bucket
# the stack was given is never touched. Then checks that the function, its
# role and its log group are gone.
#
#   infra/destroy.sh [--stack squall] [--delete-bucket]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/aws.sh
source "$ROOT/infra/aws.sh"

STACK=squall
DELETE_BUCKET=0
die() { echo "infra/destroy.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stack) STACK="${2:?--stack takes a name}"; shift 2 ;;
        --delete-bucket) DELETE_BUCKET=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
done
aws_cli cloudformation describe-stacks --stack-name "$STACK" >/dev/null 2>&1 \
    || die "no stack named $STACK"

param() {
    aws_cli cloudformation describe-stacks --stack-name "$STACK" \
        --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue" --output text
}
outputs="$(stack_outputs "$STACK")"
output() { output_value "$outputs" "$1"; }
code_bucket="$(param CodeBucket)"
given_bucket="$(param BucketName)"
bucket="$(output Bucket)"
function_name="$(output FunctionName)"
role_arn="$(output RoleArn)"

aws_cli cloudformation delete-stack --stack-name "$STACK"
status="$(stack_wait "$STACK")"
[[ "$status" == DELETE_COMPLETE ]] || die "stack $STACK ended $status, not deleted"
echo "infra/destroy.sh: stack $STACK deleted" >&2

aws_cli s3 rm --only-show-errors --recursive "s3://$code_bucket/squall-code/$STACK/"
if [[ -z "$given_bucket" || "$given_bucket" == "None" ]]; then
    if [[ "$DELETE_BUCKET" == 1 ]]; then
        aws_cli s3 rb --force "s3://$bucket" >/dev/null
        echo "infra/destroy.sh: bucket $bucket emptied and deleted" >&2
    else
        echo "infra/destroy.sh: kept bucket $bucket (retained with its data; --delete-bucket removes it)" >&2
    fi
fi

left=()
aws_cli lambda get-function --function-name "$function_name" >/dev/null 2>&1 && left+=("function $function_name")
aws_cli iam get-role --role-name "${role_arn##*/}" >/dev/null 2>&1 && left+=("role ${role_arn##*/}")
[[ -n "$(aws_cli logs describe-log-groups --log-group-name-prefix "/aws/lambda/$function_name" \
    --query 'logGroups[].logGroupName' --output text 2>/dev/null | tr -d '[:space:]')" ]] \
    && left+=("log group /aws/lambda/$function_name")
if [[ "$DELETE_BUCKET" == 1 && ( -z "$given_bucket" || "$given_bucket" == "None" ) ]]; then
    aws_cli s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 && left+=("bucket $bucket")
fi
[[ -n "$(aws_cli s3 ls "s3://$code_bucket/squall-code/$STACK/" 2>/dev/null)" ]] && left+=("zips under s3://$code_bucket/squall-code/$STACK/")
if [[ ${#left[@]} -gt 0 ]]; then
    echo "infra/destroy.sh: still there: ${left[*]}" >&2
    exit 1
fi
echo "infra/destroy.sh: nothing of stack $STACK is left" >&2
