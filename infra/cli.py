"""``streamrec infra up|status|down``."""
from __future__ import annotations

import argparse

from streamrec.config import Settings


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    stack.up(settings, only=args.only)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    rows = stack.status(settings)
    print(stack.status_table(rows))
    return 0 if all(r.running for r in rows) else 1


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    stack.logs(settings, args.service, lines=args.lines, follow=args.follow)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    stack.down(settings)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infra", help="start, check and stop the embedded stack")
    isub = p.add_subparsers(dest="infra_command", required=True, metavar="ACTION")
    up = isub.add_parser("up", help="start the embedded services and create topics (idempotent)")
    up.add_argument("--only", nargs="+", metavar="COMPONENT", help="start just these components")
    up.set_defaults(func=_up)
    isub.add_parser("status", help="a table of the components (state, pid, port, health, uptime, key figure); exit 1 if any is not running").set_defaults(func=_status)
    isub.add_parser("down", help="stop the embedded services").set_defaults(func=_down)
    logs = isub.add_parser("logs", help="show the services' logs (<data>/log/<service>.log)")
    logs.add_argument("service", nargs="*", metavar="SERVICE", help="these services only (default: all)")
    logs.add_argument("-n", "--lines", type=int, default=20, help="lines of each log to show (default: 20)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.set_defaults(func=_logs)
