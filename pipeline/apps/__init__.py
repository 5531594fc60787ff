"""The apps floor: what knows Airflow or a terminal.

:mod:`.cli` (``python -m pipeline``), :mod:`.demo` (``./run demo``), :mod:`.ui`
(``./run ui``), :mod:`.notifiers` (Airflow callbacks that send alerts) and
:mod:`.dagkit` (what the DAG files share). Apps call the flow; only the DAG
files sit above them.
"""
