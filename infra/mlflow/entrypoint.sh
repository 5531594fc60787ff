#!/bin/sh
# The MLflow tracking server of docker-compose.yml, with basic auth.
#
# `mlflow server` reads its stores from the environment (click envvars), so no
# password appears on its command line:
#   MLFLOW_BACKEND_STORE_URI      = --backend-store-uri     postgresql+psycopg2://...
#   MLFLOW_ARTIFACTS_DESTINATION  = --artifacts-destination s3://<bucket>/mlflow
# Artifacts are proxied: clients log to mlflow-artifacts:/ over HTTP and only this
# server holds the S3 settings (AWS_*, MLFLOW_S3_ENDPOINT_URL).
#
# Basic auth (`--app-name basic-auth`): users live in MLFLOW_AUTH_DATABASE_URI; the
# admin is created on the first start from MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD, and
# MLFLOW_FLASK_SERVER_SECRET_KEY signs the CSRF tokens. Clients authenticate with
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI is not set}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?MLFLOW_ARTIFACTS_DESTINATION is not set}"
: "${MLFLOW_AUTH_DATABASE_URI:?MLFLOW_AUTH_DATABASE_URI is not set}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?MLFLOW_AUTH_ADMIN_PASSWORD is not set}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_FLASK_SERVER_SECRET_KEY is not set}"

# the auth config holds a database password: private file, outside the image
umask 077
auth_ini="${MLFLOW_AUTH_CONFIG_DIR:-/tmp}/mlflow-basic-auth.ini"
cat >"$auth_ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$auth_ini"

exec mlflow server \
    --app-name basic-auth \
    --serve-artifacts \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    "$@"
