# Sourced by infra/deploy.sh, infra/destroy.sh and tests/infra/deploy_check.sh:
# the AWS CLI (`aws` on PATH, or with SQUALL_AWS_FROM_PYPI=1 or none on PATH,
# AWS CLI v1 from PyPI, pinned here) and stack helpers.
AWSCLI_VERSION=1.46.3

aws_cli() {
    if [[ -z "${SQUALL_AWS:-}" ]]; then
        if command -v aws >/dev/null && [[ -z "${SQUALL_AWS_FROM_PYPI:-}" ]]; then
            SQUALL_AWS="$(command -v aws)"
        else
            local venv="${SQUALL_CACHE:-$HOME/.cache/squall}/tools/awscli-$AWSCLI_VERSION"
            if [[ ! -f "$venv/.complete" ]]; then
                echo "installing AWS CLI $AWSCLI_VERSION from PyPI into $venv" >&2
                rm -rf "$venv"
                python3 -m venv "$venv"
                "$venv/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION"
                touch "$venv/.complete"
            fi
            SQUALL_AWS="$venv/bin/aws"
        fi
    fi
    "$SQUALL_AWS" "$@"
}

# Polls a stack until it is no longer in progress (up to 30 minutes); prints
# its final status.
stack_wait() {
    local stack="$1" status="" i
    for ((i = 0; i < 1800; i++)); do
        status="$(aws_cli cloudformation describe-stacks --stack-name "$stack" \
            --query 'Stacks[0].StackStatus' --output text 2>/dev/null)" || { echo DELETE_COMPLETE; return; }
        [[ "$status" == *_IN_PROGRESS ]] || break
        sleep 1
    done
    echo "$status"
}

# The stack's outputs as lines of `KEY VALUE`.
stack_outputs() {
    aws_cli cloudformation describe-stacks --stack-name "$1" \
        --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text
}

# The value of output KEY in OUTPUTS (as stack_outputs prints them).
output_value() {
    awk -v k="$2" '$1 == k {print $2}' <<< "$1"
}
