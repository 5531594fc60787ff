"""``python -m pipeline`` model cards and approvals.

  model-card VERSION [--out FILE] [--html] [--publish]
                           print (or write) the version's model card as it renders now;
                           --publish also logs it as a new revision of its run
  approval approve|reject VERSION --reason TEXT [--override]
                           a person's answer about promoting the held canary VERSION,
                           recorded with the OS user in the alias audit trail (approve
                           moves champion; reject rolls the canary back); approving a
                           version the review did not hold needs --override, recorded
                           as an override

Exit codes: 0 done, 2 user error (unknown version, no such option, unwritable file).
"""

from __future__ import annotations

import argparse
import os
import pwd
from pathlib import Path
from typing import Any

from pipeline.apps.cli.common import Lazy, UsageError, command, emit

__all__ = ["PARSERS"]


def _model_card(args: argparse.Namespace, lazy: Lazy) -> int:
    """print or write a version's model card (Markdown, or HTML with --html)"""
    from pipeline.flow import cards

    env = lazy.env
    _known_version(env, args.version)
    fmt = "html" if args.html or (args.out and args.out.suffix.lower() == ".html") else "md"
    text = cards.render(env, args.version, fmt=fmt)
    published = cards.publish(env, args.version, "published from the CLI") if args.publish else None
    if args.out:
        try:
            args.out.write_text(text)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: cannot write it ({exc.strerror})") from None
        where = f" (published as revision {published.revision})" if published else ""
        emit(
            args,
            f"model card of v{args.version} written to {args.out}{where}",
            {"out": str(args.out)},
        )
    else:
        print(text)
    return 0


def _known_version(env: Any, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        env.client.get_model_version(env.model, str(version))
    except MlflowException:
        raise UsageError(
            f"{env.model} has no version {version!r} (python -m pipeline models lists them)"
        ) from None


def add_model_card_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "model-card", _model_card)
    p.add_argument("version", help="model version, e.g. 7")
    p.add_argument("--out", type=Path, help="write to this file instead of printing (.html: HTML)")
    p.add_argument("--html", action="store_true", help="HTML instead of Markdown")
    p.add_argument(
        "--publish", action="store_true", help="also log it as a new revision of the version's run"
    )


def os_user() -> str:
    """Who runs the command: the OS account of the process's user id (not ``$USER``,
    which anyone can set), as the audit trail records it."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without an account (a container)
        name = f"uid {os.getuid()}"
    return f"{name} (command line)"


def decide(lazy: Lazy, args: argparse.Namespace, *, approve: bool, override: bool) -> int:
    """The one path of a person's decision from the command line (``approval``,
    ``canary promote|reject``): :func:`pipeline.flow.approval.decide`."""
    from pipeline.flow import approval
    from pipeline.steps.promotion.approval import APPROVE, REJECT

    env = lazy.env
    _known_version(env, args.version)
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must say why (it is kept in the alias audit trail)")
    out = approval.decide(
        env,
        args.version,
        chosen=APPROVE if approve else REJECT,
        who=os_user(),
        comment=reason,
        override=override,
    )
    flag = " as an OVERRIDE" if out.override else ""
    text = (
        f"{out.verdict}{flag}: v{out.version} by {out.who} ({out.comment}) -> {out.action}; "
        f"champion v{out.champion}, canary {f'v{out.canary}' if out.canary else 'none'}"
    )
    emit(args, text, out.to_xcom())
    return 0 if out.action != "lost" else 2


def _approval(args: argparse.Namespace, lazy: Lazy) -> int:
    if args.approval_action not in ("approve", "reject"):
        raise UsageError("choose an action: approve or reject")
    return decide(lazy, args, approve=args.approval_action == "approve", override=args.override)


def reason_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        "--comment",
        dest="reason",
        required=True,
        help="why; kept in the alias audit trail with your OS user",
    )


def add_approval_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "approval", parents=[common], help="approve or reject promoting the canary (audit trail)"
    )
    p.set_defaults(func=_approval, approval_action=None)
    actions = p.add_subparsers(dest="approval_action", metavar="ACTION")
    for verb in ("approve", "reject"):
        a = actions.add_parser(verb, parents=[common], help=f"{verb} the canary's promotion")
        a.add_argument("version", help="the canary's version")
        reason_option(a)
        a.add_argument(
            "--override",
            action="store_true",
            help="approve a version the canary review did not hold (recorded as an override)",
        )


PARSERS: list[Any] = [add_model_card_parser, add_approval_parser]
