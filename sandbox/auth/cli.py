"""``ehr-sandbox clients add|list|remove|faults``: SMART app registrations from the command line.

The same registration as ``POST /admin/clients`` (``sandbox.auth.clients``), on the database directly.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import Connection

from sandbox.auth import clients
from sandbox.cli import CliError
from sandbox.cli_admin import _command, _table


def _add(conn: Connection, args: argparse.Namespace) -> None:
    data: dict[str, Any] = {
        "client_id": args.client_id,
        "redirect_uris": args.redirect_uri or [],
        "scopes": args.scopes,
        "public": not args.confidential,
        "auto_approve": args.auto_approve,
        "faults": args.fault or [],
    }
    if args.launch_url:
        data["launch_url"] = args.launch_url
    if args.jwks_url:
        data["jwks_url"] = args.jwks_url
    if args.jwks:
        try:
            with open(args.jwks, encoding="utf-8") as handle:
                data["jwks"] = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read a JWKS from {args.jwks}: {exc}") from None
    client, secret = clients.register_client(conn, data)
    print(f"registered {client.client_id} ({client.kind})")
    if secret is not None:
        print(f"client_secret: {secret}  (shown once)")


def _list(conn: Connection, args: argparse.Namespace) -> None:
    found = clients.list_clients(conn)
    if args.json:
        for client in found:
            print(json.dumps(client.to_json()))
        return
    rows = [
        [c.client_id, c.kind, "yes" if c.auto_approve else "no", " ".join(c.scopes), ",".join(sorted(c.faults))]
        for c in found
    ]
    _table(rows, ["CLIENT", "TYPE", "AUTO", "SCOPES", "FAULTS"])


def _remove(conn: Connection, args: argparse.Namespace) -> None:
    clients.delete_client(conn, args.client_id)
    print(f"removed {args.client_id}")


def _faults(conn: Connection, args: argparse.Namespace) -> None:
    client = clients.set_faults(conn, args.client_id, args.fault or [])
    print(f"{client.client_id}: faults {', '.join(sorted(client.faults)) or 'none'}")


def add_client_commands(sub: Any) -> None:
    group = sub.add_parser("clients", help="SMART app registrations (clients)")
    c = group.add_subparsers(dest="action", required=True)
    p = c.add_parser("add", help="register an app")
    p.add_argument("client_id")
    p.add_argument("--scopes", required=True, help='the scopes it may ask for, e.g. "launch openid patient/*.rs"')
    p.add_argument("--redirect-uri", action="append", help="a redirect URI (repeat for several)")
    p.add_argument("--confidential", action="store_true", help="a confidential client (a secret, or --jwks/--jwks-url)")
    p.add_argument("--jwks", help="file holding its public JSON Web Key Set (private_key_jwt)")
    p.add_argument("--jwks-url", help="where its JSON Web Key Set is published")
    p.add_argument("--launch-url", help="where an EHR launch sends the browser")
    p.add_argument("--auto-approve", action="store_true", help="codes without a consent page (for CI)")
    p.add_argument("--fault", action="append", choices=clients.FAULTS, help="simulate a failure (repeat for several)")
    p.set_defaults(func=_command(_add))
    p = c.add_parser("list", help="registered apps")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_command(_list, write=False))
    p = c.add_parser("remove", help="remove an app")
    p.add_argument("client_id")
    p.set_defaults(func=_command(_remove))
    p = c.add_parser("faults", help="set the failures an app's requests meet (none: switch them off)")
    p.add_argument("client_id")
    p.add_argument("--fault", action="append", choices=clients.FAULTS)
    p.set_defaults(func=_command(_faults))
