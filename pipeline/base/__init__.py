"""The base floor: what every step stands on, and nothing above it.

:mod:`.config` (and :mod:`.sections`) the one configuration; :mod:`.store` the
object store (local folder or S3) and its keys; :mod:`.layout` where each thing
lives in the store; :mod:`.tracking` MLflow (the tracking URI, resolved once, and
the client); :mod:`.alerts` the alert package (model, payloads, transports, the
delivery ledger, delivery). Nothing here imports a step, the flow or an app.
"""
