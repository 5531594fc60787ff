"""A model card for every registered version: Markdown and HTML, an MLflow artifact.

:func:`collect_card` reads what the registry and the store already hold about one
version (its tags, its training run's ``result.json``, the newest gate report and
canary review of that version in the store, its alias moves) into a frozen
:class:`ModelCard`; :func:`render_markdown` and :func:`render_html` are pure
functions of it (every value escaped: a slice value is data, never markup; the
HTML is one self-contained page, no external CSS or script).

:func:`publish_card` logs both files to the version's training run as a new
revision, ``model_card/<model>/v<version>/r<NNN>/model_card.{md,html}`` (a run may
hold versions of several models): a card is never
overwritten, each event that adds evidence (registered, gate, canary review,
approval) adds a revision; the version's description keeps its own text and
ends with a link to the newest revision (``runs:/`` URI), and the version is
tagged ``model_card.revision`` / ``model_card.uri``.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.store import ObjectStore, check_id, get_json, join_key
from pipeline.steps.registry.aliases import AliasMove, alias_history
from pipeline.steps.registry.holdout import download_artifact, workdir

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "CARD_MARK",
    "CardRef",
    "ModelCard",
    "collect_card",
    "publish_card",
    "render_html",
    "render_markdown",
]

log = logging.getLogger(__name__)

CARD_MARK = "Model card (revision"  # the description's last paragraph starts with it
_SLICE = re.compile(r"^auc\[(?P<column>[^=\]]+)=(?P<value>.*)\]$", re.S)


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Part:
    """One section of the card: a title, lines of text, an optional table."""

    title: str
    lines: tuple[str, ...] = ()
    table: Table | None = None


@dataclass(frozen=True)
class ModelCard:
    model: str
    version: str
    reason: str  # why this revision was rendered
    rendered_at: str
    run_id: str | None
    tags: dict[str, str]
    description: str
    result: dict[str, Any] | None  # the training run's TrainResult, as a dict
    gate: dict[str, Any] | None  # the newest gate report of the version
    review: dict[str, Any] | None  # the newest canary review of the version
    moves: tuple[AliasMove, ...] = field(default_factory=tuple)

    def parts(self) -> list[Part]:
        return [
            self._summary(),
            self._data(),
            self._schedule(),
            self._holdout(),
            self._gate(),
            self._evidence("Shadow evidence", "shadow."),
            self._canary(),
            self._evidence("Guardrails before labels", "guardrails."),
            self._approval(),
            self._history(),
            Part("Known limitations", tuple(f"- {x}" for x in self.limitations())),
        ]

    # -------------------------------------------------------------- sections

    def _summary(self) -> Part:
        t = self.tags
        lines = [
            f"{self.model} v{self.version}: {t.get('candidate', '?')} ({t.get('kind', '?')}) "
            f"of training run {t.get('training_run_name', '?')} ({self.run_id or '?'})",
            f"Card rendered {self.rendered_at} ({self.reason}).",
        ]
        if self.description:
            lines.append(self.description)
        return Part("Summary", tuple(lines))

    def _data(self) -> Part:
        t = self.tags
        rows = [
            ("data snapshot", t.get("lineage.data_snapshot", "not recorded")),
            ("reference snapshot", t.get("lineage.reference_snapshot", "not recorded")),
            ("trigger", t.get("lineage.trigger", "not recorded")),
            ("reasons", t.get("lineage.reasons", "")),
            ("first validation time", t.get("first_valid_time", "")),
            ("data fingerprint", t.get("data_fingerprint", "")),
            ("code revision", t.get("code_revision", "")),
        ]
        data = (self.result or {}).get("data") or {}
        for key in sorted(data):
            if isinstance(data[key], str | int | float):
                rows.append((f"run data: {key}", str(data[key])))
        rows += sorted((k, v) for k, v in t.items() if k.startswith("lineage.validation."))
        rows += sorted((k, v) for k, v in t.items() if k.startswith("lineage.drift."))
        return Part("Data window and snapshot", table=_table(("what", "value"), rows))

    def _schedule(self) -> Part:
        result = self.result
        if result is None:
            return Part("Schedule and cycle bests", ("the training run's result is not available",))
        schedule = result.get("schedule") or {}
        lines = [
            f"status {result.get('status')} ({result.get('stop_reason')}), "
            f"{result.get('steps_done')} of {result.get('total_steps')} steps, "
            f"NaN steps {result.get('nan_count')}, cost {result.get('cost_usd')} USD",
            "schedule: " + ", ".join(f"{k}={schedule[k]}" for k in sorted(schedule)),
        ]
        rows = [
            (
                str(c.get("cycle")),
                str(c.get("step")),
                f"{float(c.get('lr', 0.0)):.3g}",
                _num(c.get("val_auc")),
                _num(c.get("val_loss")),
                "yes" if c.get("final") else "no",
            )
            for c in result.get("cycles") or []
        ]
        headers = ("cycle", "step", "lr", "val AUC", "val loss", "cycle ended")
        return Part("Schedule and cycle bests", tuple(lines), _table(headers, rows))

    def _holdout(self) -> Part:
        t = self.tags
        lines = [f"overall: AUC {t.get('val_auc', '?')}, log loss {t.get('val_loss', '?')}"]
        rows = []
        for check in (self.gate or {}).get("checks", []):
            match = _SLICE.match(str(check.get("name", "")))
            if match:
                rows.append(
                    (
                        match["column"],
                        match["value"],
                        _num(check.get("value")),
                        _num(check.get("threshold")),
                        "meets SLO" if check.get("passed") else "UNDER SLO",
                        str(check.get("detail", "")),
                    )
                )
        if not rows:
            lines.append("per slice: not measured yet (the gate measures each slice)")
        headers = ("column", "value", "AUC", "slice SLO", "verdict", "rows")
        return Part("Holdout metrics", tuple(lines), _table(headers, rows) if rows else None)

    def _gate(self) -> Part:
        gate = self.gate
        if gate is None:
            status = self.tags.get("gate.status", "not gated yet")
            return Part("Gate checks", (f"gate: {status}",))
        verdict = "passed" if gate.get("passed") else "FAILED"
        against = (
            "first model: absolute SLOs only"
            if gate.get("first_model")
            else f"against champion v{gate.get('champion_version')}"
        )
        lines = (
            f"{verdict} at {gate.get('evaluated_at')} on {gate.get('holdout_rows')} holdout "
            f"rows ({against}); report {self.tags.get('gate.report', '?')}",
        )
        rows = [
            (
                "PASS" if c.get("passed") else "FAIL",
                str(c.get("name")),
                _num(c.get("value")),
                f"{c.get('op')} {_num(c.get('threshold'))}" if c.get("op") != "info" else "info",
                str(c.get("detail", "")),
            )
            for c in gate.get("checks", [])
        ]
        return Part("Gate checks", lines, _table(("", "check", "value", "bound", "detail"), rows))

    def _evidence(self, title: str, prefix: str) -> Part:
        rows = sorted((k, v) for k, v in self.tags.items() if k.startswith(prefix))
        if not rows:
            return Part(title, ("none recorded for this version",))
        return Part(title, table=_table(("tag", "value"), rows))

    def _canary(self) -> Part:
        part = self._evidence("Canary evidence", "canary.")
        review = self.review
        if review is None:
            return part
        flat = [
            (key, _value(value))
            for key, value in sorted(review.items())
            if key != "model" and not isinstance(value, dict)
        ]
        for arm in ("canary", "champion"):
            if isinstance(review.get(arm), dict):
                flat += [(f"{arm}.{k}", _value(v)) for k, v in sorted(review[arm].items())]
        rows = (*(part.table.rows if part.table else ()), *(_row(r) for r in flat))
        return Part(
            "Canary evidence", ("newest review of this version:",), Table(("what", "value"), rows)
        )

    def _approval(self) -> Part:
        return self._evidence("Approval", "approval.")

    def _history(self) -> Part:
        rows = [
            (m.when, m.alias, _v(m.from_version), _v(m.to_version), m.action, m.who, m.why)
            for m in self.moves
        ]
        if not rows:
            return Part("Alias history", ("no alias of this model has touched this version",))
        headers = ("when", "alias", "from", "to", "action", "who", "why")
        return Part("Alias history", table=_table(headers, rows))

    def limitations(self) -> list[str]:
        out: list[str] = []
        gate = self.gate
        if gate is None:
            out.append("not gated yet: no SLO has been checked on this version")
        else:
            for c in gate.get("checks", []):
                name = str(c.get("name"))
                match = _SLICE.match(name)
                if match and not c.get("passed"):
                    out.append(
                        f"slice {match['column']}={match['value']} under its SLO: AUC "
                        f"{_num(c.get('value'))} < {_num(c.get('threshold'))} ({c.get('detail')})"
                    )
                elif not match and not c.get("passed"):
                    out.append(
                        f"gate check {name} failed: {c.get('detail') or _num(c.get('value'))}"
                    )
                elif name == "small_slices":
                    out.append(f"slices not judged: {c.get('detail')}")
            if gate.get("first_model"):
                out.append("first model: never compared with a champion on the same rows")
        status = self.tags.get("canary.status")
        if status in ("rejected", "failed"):
            out.append(f"canary {status}: {self.tags.get('canary.reason', '')}")
        if not out:
            out.append("none found in the recorded evidence")
        return out


@dataclass(frozen=True)
class CardRef:
    model: str
    version: str
    revision: int
    markdown_uri: str
    html_uri: str


# ------------------------------------------------------------------------------ rendering


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):  # an interval, say
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _num(value) if isinstance(value, float) else str(value)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"


def _row(row: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(x) for x in row)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    return Table(headers, tuple(_row(r) for r in rows))


def _md(text: str) -> str:
    """A value inside a Markdown table cell or line: no markup, no table breaks."""
    text = html.escape(str(text), quote=False)
    text = re.sub(r"([\\`*\[\]|])", r"\\\1", text)
    # an underscore emphasises only at a word's edge (CommonMark): escape those alone
    text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)
    return text.replace("\r", " ").replace("\n", "<br>")


def render_markdown(card: ModelCard) -> str:
    out = [f"# Model card: {_md(card.model)} v{_md(card.version)}", ""]
    for part in card.parts():
        out += [f"## {part.title}", ""]
        for line in part.lines:  # one paragraph each, or one list item each
            out.append("- " + _md(line[2:]) if line.startswith("- ") else _md(line) + "\n")
        if part.lines:
            out.append("")
        if part.table is not None:
            out.append("| " + " | ".join(_md(h) for h in part.table.headers) + " |")
            out.append("|" + "---|" * len(part.table.headers))
            out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in part.table.rows]
            out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}"
)


def render_html(card: ModelCard) -> str:
    e = html.escape
    title = f"Model card: {card.model} v{card.version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for part in card.parts():
        out.append(f"<h2>{e(part.title)}</h2>")
        items = [x[2:] for x in part.lines if x.startswith("- ")]
        out += [f"<p>{e(x)}</p>" for x in part.lines if not x.startswith("- ")]
        if items:
            out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in items) + "</ul>")
        if part.table is not None:
            head = "".join(f"<th>{e(h)}</th>" for h in part.table.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                for row in part.table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------------------ collecting


def _newest_report(store: ObjectStore, kind: str, name: str, version: str) -> dict[str, Any] | None:
    """The newest ``reports/<kind>/<model>/v<version>-<time>-<id>.json`` in the store."""
    prefix = join_key("reports", kind, check_id(name, "model name"))
    keys = [k for k in store.list(prefix) if k.rsplit("/", 1)[-1].startswith(f"v{version}-")]
    return get_json(store, sorted(keys)[-1]) if keys else None


def _own_description(text: str | None) -> str:
    """The version's description without the card link this module appended."""
    text = text or ""
    cut = text.find(CARD_MARK)
    return text[:cut].rstrip() if cut >= 0 else text.strip()


def collect_card(
    client: MlflowClient, store: ObjectStore, name: str, version: str, *, reason: str
) -> ModelCard:
    """Everything recorded about ``name`` v``version``, as a card."""
    from training.api import ResultError, TrainResult

    version = str(version)
    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    run_id = mv.run_id or tags.get("training_run_id")
    result = None
    if run_id:
        with workdir(None) as folder:
            try:
                path = download_artifact(client, run_id, "result.json", folder)
                result = TrainResult.load(path).to_dict()
            except (RuntimeError, ResultError) as exc:  # RegistryError is a RuntimeError
                log.warning("model card of %s v%s: no training result (%s)", name, version, exc)
    moves = tuple(
        m for m in alias_history(store, name) if version in (m.from_version, m.to_version)
    )
    return ModelCard(
        model=name,
        version=version,
        reason=reason,
        rendered_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
        tags=tags,
        description=_own_description(mv.description),
        result=json.loads(json.dumps(result, default=str)) if result else None,
        gate=_newest_report(store, "gate", name, version),
        review=_newest_report(store, "canary", name, version),
        moves=moves,
    )


def _next_revision(client: MlflowClient, run_id: str, folder: str) -> int:
    seen = [
        int(m.group(1))
        for a in client.list_artifacts(run_id, folder)
        if (m := re.search(r"/r(\d+)$", a.path))
    ]
    return max(seen, default=0) + 1


def publish_card(
    client: MlflowClient, store: ObjectStore, name: str, version: str, *, reason: str
) -> CardRef:
    """Render the card of ``name`` v``version`` and log it as a new revision of its run."""
    card = collect_card(client, store, name, version, reason=reason)
    if card.run_id is None:
        raise ValueError(f"{name} v{version} has no training run to hold its model card")
    versions = f"model_card/{check_id(name, 'model name')}/v{card.version}"
    revision = _next_revision(client, card.run_id, versions)
    folder = f"{versions}/r{revision:03d}"
    client.log_text(card.run_id, render_markdown(card), f"{folder}/model_card.md")
    client.log_text(card.run_id, render_html(card), f"{folder}/model_card.html")
    md_uri = f"runs:/{card.run_id}/{folder}/model_card.md"
    html_uri = f"runs:/{card.run_id}/{folder}/model_card.html"
    link = (
        f"{CARD_MARK} {revision}, {card.rendered_at}, {reason}): {md_uri} "
        f"(HTML: {html_uri}; earlier revisions beside it under {versions}/)"
    )
    own = card.description
    client.update_model_version(name, card.version, description=f"{own}\n\n{link}".strip())
    client.set_model_version_tag(name, card.version, "model_card.revision", str(revision))
    client.set_model_version_tag(name, card.version, "model_card.uri", md_uri)
    log.info("model card of %s v%s: revision %d (%s)", name, card.version, revision, reason)
    return CardRef(name, card.version, revision, md_uri, html_uri)


def publish_quietly(
    client: MlflowClient, store: ObjectStore, name: str, version: str, *, reason: str
) -> CardRef | None:
    """:func:`publish_card` that logs instead of raising: a card documents a decision
    and must never undo or block it."""
    try:
        return publish_card(client, store, name, version, reason=reason)
    except Exception:
        log.exception("could not publish the model card of %s v%s (%s)", name, version, reason)
        return None
