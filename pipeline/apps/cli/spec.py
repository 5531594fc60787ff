"""``python -m pipeline spec draft FILE...``: a dataset spec drafted from sample files
(:mod:`pipeline.steps.quality.draft`), for a person to review before the first ingest."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.apps.cli.common import Lazy, UsageError

__all__ = ["PARSERS"]


def _spec(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline.base.config import load_config
    from pipeline.steps.quality.draft import draft_from_files
    from training.api import atomic_write_text

    if args.spec_action != "draft":
        raise UsageError("spec needs an action: python -m pipeline spec draft FILE... --help")
    name = args.name or (Path(args.out).stem if args.out else "my_data")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise UsageError(
            f"--name {name!r}: a data set name is lower case letters, digits and _ "
            "(it keys the store), e.g. --name churn"
        )
    s3 = any(f.startswith("s3://") for f in args.files)
    draft = draft_from_files(
        args.files,
        name=name,
        id_column=args.id,
        timestamp_column=args.timestamp,
        target=args.target,
        margin=args.margin,
        storage=load_config(args.config).storage if s3 else None,
    )
    text = draft.yaml(args.files)
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to replace it (a spec is reviewed by hand)")
    atomic_write_text(out, text)
    print(
        f"wrote {out}: {len(draft.spec['columns'])} columns from {draft.files} file(s), "
        f"{draft.rows:,} rows; review it, then: COSINE_RETRAIN_DATASET_SPEC={out}",
        file=sys.stderr,
    )
    return 0


def add_spec_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("spec", parents=[common], help="draft a dataset spec from sample files")
    p.set_defaults(func=_spec, spec_action=None)
    actions = p.add_subparsers(dest="spec_action", metavar="ACTION")
    d = actions.add_parser(
        "draft",
        parents=[common],
        help="write a spec from sample files (roles, allowed sets, ranges, null shares)",
        description="Draft a dataset spec from sample batch files (features and target), "
        "for a person to review: roles from dtypes and cardinality, ranges from the observed "
        "values widened by --margin, null shares from the samples (rules: "
        "pipeline/steps/quality/draft.py).",
    )
    d.add_argument("files", nargs="+", metavar="FILE", help="CSV/Parquet files, one batch each")
    d.add_argument("--id", required=True, metavar="COL", help="the id column")
    d.add_argument("--timestamp", required=True, metavar="COL", help="the timestamp column")
    d.add_argument("--target", required=True, metavar="COL", help="the 0/1 target column")
    d.add_argument("--name", help="the data set's name (default: the output file's stem)")
    d.add_argument("-o", "--out", help="write the spec here (default: print it)")
    d.add_argument("--force", action="store_true", help="replace an existing --out file")
    d.add_argument(
        "--margin", type=float, default=0.1, help="ranges widened by this share of their width"
    )


PARSERS: list[Any] = [add_spec_parser]
