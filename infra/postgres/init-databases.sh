#!/usr/bin/env bash
# First start of the PostgreSQL container (empty data volume): one role and one
# database per service, passwords from the environment (.env via docker-compose.yml).
#   airflow      -> database airflow       (Airflow metadata)
#   mlflow       -> databases mlflow       (tracking + model registry)
#                              mlflow_auth (MLflow basic-auth users and permissions)
# Later starts skip this script (the official image runs initdb scripts only once).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"

# psql variables (:'name') quote the passwords as SQL literals: no injection, any character
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
SQL
echo "init-databases: roles airflow, mlflow; databases airflow, mlflow, mlflow_auth"
