#!/usr/bin/env bash
# One-shot Airflow setup (the airflow-init service of docker-compose.yml):
#   1. `airflow db migrate` on the PostgreSQL metadata database (idempotent);
#   2. the SimpleAuthManager password file for AIRFLOW_ADMIN_USER, from .env.
# The api-server reads that file; nothing ever falls back to a generated or
# default password.
set -euo pipefail

: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set (see .env.example)}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the passwords file path is not set}"
user="${AIRFLOW_ADMIN_USER:-admin}"

airflow db migrate

umask 077
python - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" "$user" <<'PY'
import json, os, sys
path, user = sys.argv[1], sys.argv[2]
tmp = path + ".tmp"
with open(tmp, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
os.replace(tmp, path)
print(f"airflow-init: password of {user!r} written to {path}")
PY
