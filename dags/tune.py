"""
### Tune

Tunes the cosine schedule (`tune.schedule`: quarterly by default, or a manual
trigger): an Optuna study (TPE) over `tune.space` (peak rate, first cycle in
epochs, cycle multiplier, peak decay, weight decay, warmup, number of cycles,
stopping) whose trials train the tuning window, each a nested MLflow run under the
study's run, pruned at cycle ends by successive halving; bounded by `tune.n_trials`
and `tune.budget_usd` (each trial stops at what is left). A killed run resumes the
study from its storage. The best trial is written as a versioned training config
(`tuning/<dataset>/v<N>.yaml`) that later retrains use only after it beats the
current config on the held-out window beyond the noise of paired seeds, or is
cheaper and no worse (docs/training.md, Tuning).
"""

from __future__ import annotations

from airflow.sdk import Param, task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "tune",
    schedule=kit.cron(kit.CONFIG.tune.schedule),
    doc_md=__doc__,
    params={
        "window": kit.batch_list_param("tuning batches, comma-separated"),
        "holdout": kit.batch_list_param("held-out batches, comma-separated"),
        "trials": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1000,
            description="override tune.n_trials (at most 1,000 from the form)",
        ),
    },
)
def tune():
    @task(doc_md="Study, versioned config and held-out verdict (`flow.tuning.tune`).")
    def study(params=None):
        from pipeline.flow import tuning

        def batches(text):
            return [b.strip() for b in text.split(",") if b.strip()] if text else None

        with kit.permanent():  # a TuneError (bad settings) is a ConfigError: no retry
            return tuning.tune(
                kit.env(),
                window=batches(params["window"]),
                holdout=batches(params["holdout"]),
                n_trials=params["trials"],
            ).to_xcom()

    study()


tune()
