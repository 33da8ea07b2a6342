"""LocalStack init hook (ready.d): the bucket Squall works in and the executor function.

LocalStack runs this once it is ready. It is idempotent: run it again and it
changes nothing, except the function's code when the zip changed. It uses only
boto3 (in LocalStack's own Python), so CI runs the very same file against
LocalStack in host mode (tests/emulators/start.sh).

Environment (defaults fit localstack/docker-compose.yml):
  SQUALL_BUCKET        bucket for tables, shuffle files and results  (squall)
  SQUALL_FUNCTION      the executor function's name                  (squall-executor)
  SQUALL_LAMBDA_ZIP    the zip infra/package.sh built                 (/etc/localstack/init/squall/squall-lambda-x86_64.zip)
  SQUALL_LAMBDA_ARCH   x86_64 or arm64                                (from the zip's name, else x86_64)
  SQUALL_MEMORY_MB     function memory                                (2048)
  SQUALL_EXPECT_ACTIVE 1: wait until the function is Active           (1; host mode cannot run functions: 0)
  AWS_ENDPOINT_URL     LocalStack's endpoint                          (http://localhost:4566)
"""

import hashlib
import base64
import os
import sys
import time

import boto3
from botocore.exceptions import ClientError

BUCKET = os.environ.get("SQUALL_BUCKET", "squall")
FUNCTION = os.environ.get("SQUALL_FUNCTION", "squall-executor")
ZIP = os.environ.get("SQUALL_LAMBDA_ZIP", "/etc/localstack/init/squall/squall-lambda-x86_64.zip")
ARCH = os.environ.get("SQUALL_LAMBDA_ARCH", "arm64" if "arm64" in os.path.basename(ZIP) else "x86_64")
MEMORY_MB = int(os.environ.get("SQUALL_MEMORY_MB", "2048"))
EXPECT_ACTIVE = os.environ.get("SQUALL_EXPECT_ACTIVE", "1") == "1"
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://localhost:4566")
ROLE = "squall-executor"
# Zips above Lambda's 50 MB direct-upload limit must come from S3; going through
# the bucket always keeps one path for every size.
CODE_PREFIX = "_squall/deploy/"


def log(message):
    print(f"squall init: {message}", flush=True)


def client(service):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def ensure_bucket(s3):
    try:
        s3.head_bucket(Bucket=BUCKET)
        log(f"bucket {BUCKET} exists")
    except ClientError:
        s3.create_bucket(Bucket=BUCKET)
        log(f"created bucket {BUCKET}")


def ensure_role(iam):
    try:
        return iam.get_role(RoleName=ROLE)["Role"]["Arn"]
    except ClientError:
        trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
        arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        log(f"created role {ROLE}")
        return arn


def upload_code(s3):
    with open(ZIP, "rb") as f:
        body = f.read()
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    key = f"{CODE_PREFIX}{hashlib.sha256(body).hexdigest()[:16]}.zip"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return key, sha, len(body)


def function_env():
    # Inside LocalStack's Lambda containers AWS_ENDPOINT_URL already points at
    # LocalStack; the executor reads S3 from the standard variables.
    return {"Variables": {"SQUALL_LOG": "info", "AWS_ALLOW_HTTP": "true"}}


def ensure_function(lam, role_arn, key, sha, size):
    try:
        current = lam.get_function(FunctionName=FUNCTION)["Configuration"]
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        current = None
    if current is None:
        lam.create_function(
            FunctionName=FUNCTION,
            Runtime="provided.al2023",
            Handler="bootstrap",
            Role=role_arn,
            Code={"S3Bucket": BUCKET, "S3Key": key},
            Architectures=[ARCH],
            MemorySize=MEMORY_MB,
            Timeout=900,
            Environment=function_env(),
        )
        log(f"created function {FUNCTION} ({ARCH}, {size / 1e6:.1f} MB zip)")
    elif current.get("CodeSha256") != sha:
        lam.update_function_code(FunctionName=FUNCTION, S3Bucket=BUCKET, S3Key=key)
        log(f"updated the code of {FUNCTION}")
    else:
        log(f"function {FUNCTION} is up to date")


def wait_active(lam):
    deadline = time.time() + 300
    while True:
        state = lam.get_function(FunctionName=FUNCTION)["Configuration"].get("State")
        if not EXPECT_ACTIVE or state == "Active":
            return state
        if state == "Failed" or time.time() > deadline:
            sys.exit(f"squall init: function {FUNCTION} is {state}, not Active")
        time.sleep(1)


def main():
    if not os.path.isfile(ZIP):
        sys.exit(f"squall init: no executor zip at {ZIP} (build it with infra/package.sh)")
    s3, lam, iam = client("s3"), client("lambda"), client("iam")
    ensure_bucket(s3)
    role_arn = ensure_role(iam)
    key, sha, size = upload_code(s3)
    ensure_function(lam, role_arn, key, sha, size)
    state = wait_active(lam)
    # The check CI relies on: both exist now.
    s3.head_bucket(Bucket=BUCKET)
    config = lam.get_function(FunctionName=FUNCTION)["Configuration"]
    log(f"ready: bucket {BUCKET}, function {config['FunctionArn']} ({state})")


if __name__ == "__main__":
    main()
