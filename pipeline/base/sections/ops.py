"""Running it: alerts and the monthly budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from pipeline.base.kinds import AlertKind
from pipeline.base.sections.common import Section

__all__ = ["AlertsConfig", "BudgetConfig"]


class AlertsConfig(Section):
    """Where alerts go and how hard delivery tries (docs/alerts.md).

    A receiver that is down, slow or failing never blocks a step for longer than
    ``total_budget_s``: every attempt is capped by ``timeout_s`` and by what is
    left of the budget; channels are tried side by side.
    """

    enabled: bool = Field(True, description="false: no alert is sent or recorded")
    channels: list[Literal["webhook", "slack", "email"]] = Field(
        default_factory=lambda: ["webhook"],
        min_length=1,
        description='where alerts go (env: a JSON list, e.g. ["webhook","slack"])',
    )
    webhook_url: str | None = Field(
        None, pattern=r"^https?://", description="generic JSON webhook; unset: alerts are logged"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="signs each webhook body (HMAC-SHA256 header)"
    )
    slack_webhook_url: SecretStr | None = Field(
        None, description="Slack incoming-webhook URL (a secret); required for channel slack"
    )
    smtp_host: str | None = Field(None, description="SMTP server; required for channel email")
    smtp_port: int = Field(25, ge=1, le=65535, description="587 with starttls, 465 with ssl")
    smtp_starttls: bool = Field(False, description="upgrade the connection with STARTTLS")
    smtp_ssl: bool = Field(False, description="implicit TLS (SMTPS, port 465)")
    smtp_user: str | None = Field(None, description="SMTP login (with smtp_password)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password")
    email_from: str | None = Field(None, description="sender address")
    email_to: list[str] = Field(default_factory=list, description="recipients")
    timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="per attempt (connect, read)")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a failed one")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="first pause; doubles each retry")
    total_budget_s: float = Field(
        15.0, gt=0.0, le=300.0, description="most seconds one send_alert call may take"
    )
    kinds: list[str] | None = Field(None, description="kinds sent (e.g. gate_failed); None: all")
    min_severity: Literal["info", "warning", "critical"] = Field(
        "info", description="alerts below it are dropped"
    )

    @model_validator(mode="after")
    def _channels_complete(self) -> AlertsConfig:
        if "slack" in self.channels and self.slack_webhook_url is None:
            raise ValueError("alerts.slack_webhook_url is required when alerts.channels has slack")
        if "email" in self.channels and not (self.smtp_host and self.email_from and self.email_to):
            raise ValueError(
                "alerts.smtp_host, alerts.email_from and alerts.email_to are required "
                "when alerts.channels has email"
            )
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("alerts.smtp_user and alerts.smtp_password go together")
        if self.smtp_starttls and self.smtp_ssl:
            raise ValueError("alerts.smtp_starttls and alerts.smtp_ssl exclude each other")
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - {k.value for k in AlertKind})
            if unknown:
                raise ValueError(
                    f"alerts.kinds: unknown kind(s) {unknown}; choose from "
                    f"{[k.value for k in AlertKind]}"
                )
        return self


class BudgetConfig(Section):
    """The monthly spend rule: over budget, event-triggered retrains pause (docs/alerts.md)."""

    monthly_usd: float | None = Field(
        None, ge=0.0, description="training spend per calendar month (UTC); None: no limit"
    )
    pause_scheduled: bool = Field(False, description="over budget, pause scheduled retrains too")
    pause_quality: bool = Field(
        True, description="over budget, pause retrains requested by a live-quality breach"
    )
    experiments: list[str] | None = Field(
        None, description="MLflow experiments summed; default: mlflow.experiment or the model name"
    )
