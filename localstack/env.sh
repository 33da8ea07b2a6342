# Source this to point squall (and the AWS CLI) at the LocalStack of
# localstack/docker-compose.yml:   source localstack/env.sh
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_ENDPOINT_URL=http://localhost:4566 AWS_ALLOW_HTTP=true
# The eight TPC-H tables as `squall run` arguments, for data written by
# `squall tpch --out s3://squall/tpch`.
TPCH_TABLES=""
for t in lineitem orders customer part partsupp supplier nation region; do
    TPCH_TABLES="$TPCH_TABLES --table $t=s3://squall/tpch/$t/"
done
export TPCH_TABLES
