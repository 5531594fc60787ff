#!/bin/sh
# One-shot MinIO setup (the minio-init service of docker-compose.yml), idempotent:
#   1. the bucket MINIO_BUCKET (data sets, checkpoints, reports, MLflow artifacts);
#   2. the application's user MINIO_APP_ACCESS_KEY with a policy limited to that bucket,
#      so Airflow, MLflow and the trainer never hold the root credentials.
set -eu

: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is not set}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is not set}"
: "${MINIO_APP_ACCESS_KEY:?MINIO_APP_ACCESS_KEY is not set}"
: "${MINIO_APP_SECRET_KEY:?MINIO_APP_SECRET_KEY is not set}"
: "${MINIO_BUCKET:?MINIO_BUCKET is not set}"
endpoint="${MINIO_ENDPOINT:-http://minio:9000}"
policy="${MINIO_BUCKET}-readwrite"

mc alias set local "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/${MINIO_BUCKET}"

policy_file="$(mktemp)"
cat >"$policy_file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::${MINIO_BUCKET}"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::${MINIO_BUCKET}/*"]}
  ]
}
JSON
mc admin policy create local "$policy" "$policy_file"
rm -f "$policy_file"

# add is an update when the user exists (the secret follows .env)
mc admin user add local "$MINIO_APP_ACCESS_KEY" "$MINIO_APP_SECRET_KEY"
if ! mc admin policy entities local --user "$MINIO_APP_ACCESS_KEY" | grep -q "$policy"; then
    mc admin policy attach local "$policy" --user "$MINIO_APP_ACCESS_KEY"
fi
echo "minio-init: bucket ${MINIO_BUCKET}, user ${MINIO_APP_ACCESS_KEY} with policy ${policy}"
