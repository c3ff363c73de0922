"""The `rowhook` command line: one subcommand per job, each a thin call into the module that does it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from rowhook import __version__
from rowhook.db import connect
from rowhook.errors import RowhookError, translate
from rowhook.settings import Settings, SettingsError, parse_duration

log = logging.getLogger("rowhook")


def resolve_database_url(args: argparse.Namespace, settings: Settings) -> str:
    """--database-url, else ROWHOOK_DATABASE_URL, else the embedded server of local development."""
    url = getattr(args, "database_url", None) or settings.database_url
    if url:
        return url
    from rowhook.embedded import start_embedded

    server = start_embedded(getattr(args, "data_dir", None))
    print(
        f"rowhook: no ROWHOOK_DATABASE_URL set; using embedded PostgreSQL in {server.data_dir}",
        file=sys.stderr,
    )
    return server.url()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.migrate import migrate

    applied = migrate(resolve_database_url(args, settings))
    print("applied: " + ", ".join(applied) if applied else "rowhook schema is up to date")
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    with connect(resolve_database_url(args, settings)) as conn:
        row = conn.execute(
            "SELECT rowhook.watch(%s::regclass, resource => %s, account_column => %s,"
            " scope_columns => %s, exclude_columns => %s, label_column => %s, public => %s,"
            " columns => %s) AS name",
            (
                args.table,
                args.resource,
                args.account_column,
                args.scope or [],
                args.exclude or [],
                args.label_column,
                args.public,
                args.columns,
            ),
        ).fetchone()
    print(f"watching {args.table} as resource {row['name']}")  # type: ignore[index]
    return 0


def cmd_unwatch(args: argparse.Namespace, settings: Settings) -> int:
    with connect(resolve_database_url(args, settings)) as conn:
        row = conn.execute("SELECT rowhook.unwatch(%s::regclass) AS name", (args.table,)).fetchone()
    print(f"stopped watching {args.table} (resource {row['name']}); its subscriptions are kept")  # type: ignore[index]
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook import tokens

    with connect(resolve_database_url(args, settings)) as conn:
        if args.token_command == "create":
            token, record = tokens.create_token(conn, args.account, args.name)
            print(token)  # alone on stdout, so scripts can capture it
            print(
                f"created {record['id']} for account {record['account']}; it is shown only once",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            for row in tokens.list_tokens(conn, args.account):
                state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
                used = f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "never"
                print(f"{row['id']}\t{row['account']}\t{row['name'] or '-'}\t{state}\tlast used {used}")
        elif not tokens.revoke_token(conn, args.id):
            print(f"rowhook: no active token with id {args.id}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.id}")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import serve

    return serve(
        settings, resolve_database_url(args, settings), host=args.host, port=args.port, workers=args.workers
    )


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from relay.main import run

    return run(settings, resolve_database_url(args, settings))


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.status import print_status

    return print_status(resolve_database_url(args, settings))


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.prune import run_prune

    return run_prune(resolve_database_url(args, settings), args, settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.demo import run_demo

    return run_demo(args, settings)


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(
    sub: argparse._SubParsersAction, name: str, handler: Callable[..., int], help: str, database: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    if database:
        parser.add_argument("--database-url", help="libpq URL (default: $ROWHOOK_DATABASE_URL)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rowhook", description="Row changes in PostgreSQL as signed webhooks."
    )
    parser.add_argument("--version", action="version", version=f"rowhook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add(sub, "migrate", cmd_migrate, "install or upgrade the rowhook schema (idempotent)")

    watch = _add(sub, "watch", cmd_watch, "register a table as a resource and install its capture triggers")
    watch.add_argument("table", help="table name, optionally schema-qualified")
    watch.add_argument("--resource", help="resource name (default: the table name)")
    watch.add_argument("--account-column", help="column holding the account (tenant) of each row")
    watch.add_argument(
        "--scope", action="append", metavar="COLUMN", help="column subscriptions may filter on (repeatable)"
    )
    watch.add_argument(
        "--exclude",
        action="append",
        metavar="COLUMN",
        help="column that never leaves the database (repeatable)",
    )
    watch.add_argument(
        "--columns",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        metavar="A,B,...",
        help="allow-list: capture only these columns (plus key, account, scope and label columns);"
        " safer than --exclude for tables that may grow sensitive columns",
    )
    watch.add_argument("--label-column", help="column shown as the item label in GET /resources/{name}/items")
    watch.add_argument("--public", action="store_true", help="no account column: every account may subscribe")

    unwatch = _add(sub, "unwatch", cmd_unwatch, "remove a table's capture triggers (subscriptions are kept)")
    unwatch.add_argument("table")

    token = _add(sub, "token", cmd_token, "manage API access tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token; prints it alone on stdout, once")
    create.add_argument("--account", required=True)
    create.add_argument("--name", help="what the token is for, e.g. zapier")
    listing = token_sub.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--account")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")

    serve = _add(sub, "serve", cmd_serve, "run the subscription API until SIGTERM/SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="API worker processes sharing the port (default: 1)"
    )

    _add(sub, "relay", cmd_relay, "run the relay (fan-out and delivery) until SIGTERM/SIGINT")
    _add(sub, "status", cmd_status, "outbox lag, pending and failed deliveries, failing subscriptions")

    prune = _add(sub, "prune", cmd_prune, "delete old dispatched events and finished deliveries in batches")
    prune.add_argument(
        "--older-than",
        type=duration,
        help="age of succeeded deliveries and dispatched events to delete, e.g. 7d"
        " (default: $ROWHOOK_KEEP_SUCCEEDED_S)",
    )
    prune.add_argument(
        "--failed-older-than",
        type=duration,
        help="age of failed deliveries to delete (default: $ROWHOOK_KEEP_FAILED_S)",
    )
    prune.add_argument("--batch-size", type=int, default=5000)

    demo = _add(sub, "demo", cmd_demo, "run a live demo on an embedded PostgreSQL")
    demo.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data directory")
    demo.add_argument(
        "--keep-running", action="store_true", help="keep the API and relay up after the demo until Ctrl-C"
    )
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level.upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        return int(args.handler(args, settings))
    except SettingsError as exc:
        print(f"rowhook: invalid setting: {exc}", file=sys.stderr)
        return 2
    except RowhookError as exc:
        print(f"rowhook: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"rowhook: {translate(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
