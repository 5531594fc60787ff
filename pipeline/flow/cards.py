"""Model cards from the flow: render one for the CLI, add a revision after a decision.

A card is evidence about a decision, never a condition of it: :func:`after` adds
the revision whether the step it wraps succeeded or raised (a failed gate is
evidence too), and a card that cannot be published is logged, not raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from pipeline.flow.env import Env
from pipeline.steps.registry.model_card import (
    CardRef,
    collect_card,
    publish_quietly,
    render_html,
    render_markdown,
)

__all__ = ["after", "publish", "render"]


def render(env: Env, version: str, *, fmt: Literal["md", "html"] = "md") -> str:
    """The card of ``version`` as it would be rendered now (nothing is logged)."""
    card = collect_card(env.client, env.store, env.model, str(version), reason="rendered on demand")
    return render_html(card) if fmt == "html" else render_markdown(card)


def publish(env: Env, version: str | None, reason: str) -> CardRef | None:
    """A new card revision of ``version`` (None: nothing to do, or it could not be
    published: logged)."""
    if version is None:
        return None
    return publish_quietly(env.client, env.store, env.model, str(version), reason=reason)


@contextlib.contextmanager
def after(env: Env, version: str | None, reason: str) -> Iterator[None]:
    """Publish a card revision of ``version`` once the wrapped step ends, however it ends."""
    try:
        yield
    finally:
        publish(env, version, reason)
