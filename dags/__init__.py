"""The cosine-retrain DAG files (wiring only; see pipeline.apps.dagkit).

A package so that import-linter can see its imports (.importlinter: the DAG
files sit above pipeline.apps); Airflow itself parses each file on its own.
"""
