"""``streamrec auth token``: mint a token (``streamrec.auth`` says what one allows)."""
from __future__ import annotations

import argparse

from streamrec.auth import DEFAULT_TTL_DAYS, SCOPES, load_secret, mint
from streamrec.config import Settings
from streamrec.errors import UserError


def _token(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.auth.enabled:
        raise UserError("auth is off (auth.enabled: false): no token is needed, and none would be checked")
    scopes = [s for arg in args.scope for s in arg.replace(",", " ").split()]
    print(mint(load_secret(settings), scopes, user=args.user, name=args.name, ttl_days=args.days))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("auth", help="tokens for the HTTP APIs")
    auth_sub = p.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    scopes = "; ".join(f"{name}: {text}" for name, text in SCOPES.items())
    t = auth_sub.add_parser("token", help="mint a token and print it (send it as 'Authorization: Bearer <token>')",
                            description=f"Scopes - {scopes}.")
    t.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help=f"a scope to grant (repeat, or comma-separate): {', '.join(SCOPES)}")
    t.add_argument("--user", help="the one user the token reads for (needed by recommend:read)")
    t.add_argument("--name", default="cli", help="the client's name when the token has no --user (default: cli)")
    t.add_argument("--days", type=float, default=DEFAULT_TTL_DAYS, help=f"lifetime (default: {DEFAULT_TTL_DAYS:g})")
    t.set_defaults(func=_token)
