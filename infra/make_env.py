"""Write ``.env`` for docker-compose.yml from ``.env.example`` with fresh secrets.

    python infra/make_env.py                 # .env beside docker-compose.yml
    python infra/make_env.py --output PATH   # elsewhere (tests, another checkout)

Every empty ``KEY=`` line of the example gets a random value (URL-safe, so it can
go into a database URL; ``AIRFLOW_FERNET_KEY`` gets a valid Fernet key); lines
with a value and comments are copied as they are. An existing file is never
overwritten (``--force`` replaces it). The file is created with mode 0600.
Standard library only: it runs before any environment is set up.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def secret_for(key: str) -> str:
    if key == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


def render(example: str) -> str:
    out = []
    for line in example.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.endswith("="):
            key = stripped[:-1]
            line = f"{key}={secret_for(key)}"
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.force:
        print(
            f"error: {args.output} exists; nothing was changed (--force replaces it, "
            "and every secret in it: running services keep the old ones in their volumes)",
            file=sys.stderr,
        )
        return 2
    text = render(args.example.read_text())
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(args.output, 0o600)
    print(f"wrote {args.output} (mode 0600); keep it out of version control")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
