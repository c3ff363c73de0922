"""The `rowhook` command line: one subcommand per job, each a thin call into the module that does it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from rowhook import __version__
from rowhook.errors import RowhookError, StartupError, translate
from rowhook.preflight import check_database, connect_checked, wait_for_database
from rowhook.settings import Settings, SettingsError, parse_duration
from rowhook.tokens import SCOPES

log = logging.getLogger("rowhook")


NO_DATABASE = "no database configured: set ROWHOOK_DATABASE_URL or pass --database-url"


def resolve_database_url(args: argparse.Namespace, settings: Settings) -> str:
    """--database-url, else ROWHOOK_DATABASE_URL, else the embedded server when asked for (--embedded,
    or the demo); otherwise a one-line error: silently starting a server with no schema helps nobody."""
    url = getattr(args, "database_url", None) or settings.database_url
    if url:
        return url
    if not getattr(args, "embedded", False):
        raise StartupError(NO_DATABASE)
    from rowhook.embedded import start_embedded

    server = start_embedded(getattr(args, "data_dir", None))
    print(f"rowhook: using embedded PostgreSQL in {server.data_dir}", file=sys.stderr)
    return server.url()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.migrate import migrate

    url = resolve_database_url(args, settings)
    connect_checked(url, role="cli").close()  # a bad URL is one line and exit 2, as for other commands
    applied = migrate(url)
    print("applied: " + ", ".join(applied) if applied else "rowhook schema is up to date")
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    with check_database(resolve_database_url(args, settings)) as conn:
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
    with check_database(resolve_database_url(args, settings)) as conn:
        row = conn.execute("SELECT rowhook.unwatch(%s::regclass) AS name", (args.table,)).fetchone()
    print(f"stopped watching {args.table} (resource {row['name']}); its subscriptions are kept")  # type: ignore[index]
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook import tokens

    with check_database(resolve_database_url(args, settings)) as conn:
        if args.token_command == "create":
            token, record = tokens.create_token(
                conn,
                args.account,
                args.name,
                scopes=args.scope,
                expires_at=args.expires_at,
                expires_in_s=args.expires_in,
            )
            print(token)  # alone on stdout, so scripts can capture it
            expiry = f", expires {record['expires_at']:%Y-%m-%d %H:%M:%S %Z}" if record["expires_at"] else ""
            print(
                f"created {record['id']} for account {record['account']}"
                f" (scopes: {', '.join(record['scopes'])}{expiry}); it is shown only once",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            for row in tokens.list_tokens(conn, args.account):
                print("\t".join(token_line(row)))
        elif not tokens.revoke_token(conn, args.id):
            print(f"rowhook: no active token with id {args.id}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.id}")
    return 0


def token_line(row: dict[str, Any]) -> list[str]:
    if row["revoked_at"]:
        state = f"revoked {row['revoked_at']:%Y-%m-%d}"
    elif row["expired"]:
        state = f"expired {row['expires_at']:%Y-%m-%d %H:%M}"
    elif row["expires_at"]:
        state = f"active until {row['expires_at']:%Y-%m-%d %H:%M}"
    else:
        state = "active"
    used = f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "never"
    scopes = ",".join(row["scopes"])
    return [row["id"], row["account"], row["name"] or "-", scopes, state, f"last used {used}"]


def ready_database_url(args: argparse.Namespace, settings: Settings, role: str) -> str | None:
    """For the long-running processes: wait until the database answers with the current schema.
    None when SIGTERM/SIGINT arrived meanwhile (a normal stop)."""
    url = resolve_database_url(args, settings)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        wait_for_database(url, role=role)
    except KeyboardInterrupt:
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return url


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import serve

    if (url := ready_database_url(args, settings, "api")) is None:
        return 0
    return serve(settings, url, host=args.host, port=args.port, workers=args.workers)


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from relay.main import run

    if (url := ready_database_url(args, settings, "relay")) is None:
        return 0
    metrics = {
        field: getattr(args, option)
        for option, field in (("metrics_port", "relay_metrics_port"), ("metrics_host", "relay_metrics_host"))
        if hasattr(args, option)
    }
    return run(dataclasses.replace(settings, **metrics), url)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.status import print_status

    url = resolve_database_url(args, settings)
    check_database(url).close()
    return print_status(url)


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.prune import run_prune

    url = resolve_database_url(args, settings)
    check_database(url).close()
    return run_prune(url, args, settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from rowhook.demo.run import run_demo

    return run_demo(args, settings)


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def aware_datetime(text: str) -> datetime:
    """An argparse type: an ISO 8601 time with its time zone (a bare one would depend on the host)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+02:00")
    return value


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], refused with one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            limits = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range (use {limits})")
        return value

    return parse


class DefaultsHelp(argparse.HelpFormatter):
    """--help shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" not in text
            and "(default" not in text
            and action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


def database_options() -> argparse.ArgumentParser:
    """--database-url and --embedded, accepted by every subcommand (also after `token create`)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="libpq URL of the application database (default: $ROWHOOK_DATABASE_URL)",
    )
    options.add_argument(
        "--embedded",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use an embedded PostgreSQL (local development) when no database URL is given",
    )
    options.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"data directory of the embedded PostgreSQL (default: {default_data_dir_text()})",
    )
    return options


def default_data_dir_text() -> str:
    from rowhook.embedded import default_data_dir

    return str(default_data_dir())


def _add(
    sub: argparse._SubParsersAction, name: str, handler: Callable[..., int], help: str, database: bool = True
) -> argparse.ArgumentParser:
    parents = [database_options()] if database else []
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, parents=parents, formatter_class=DefaultsHelp
    )
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rowhook",
        description="Row changes in PostgreSQL as signed webhooks.",
        epilog="Every command reads its database from --database-url or $ROWHOOK_DATABASE_URL;"
        " only `rowhook demo` starts an embedded PostgreSQL by itself (others with --embedded).",
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
    database = [database_options()]
    create = token_sub.add_parser(
        "create", help="create a token; prints it alone on stdout, once", parents=database
    )
    create.add_argument("--account", required=True)
    create.add_argument("--name", help="what the token is for, e.g. zapier")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="read (GET only) or manage (everything of the account); repeatable (default: manage)",
    )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in", type=duration, metavar="DURATION", help="e.g. 1h or 90d (default: never expires)"
    )
    expiry.add_argument("--expires-at", type=aware_datetime, metavar="TIME", help="e.g. 2027-01-01T00:00:00Z")
    listing = token_sub.add_parser("list", help="list tokens (never the tokens themselves)", parents=database)
    listing.add_argument("--account")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id", parents=database)
    revoke.add_argument("id")

    serve = _add(sub, "serve", cmd_serve, "run the subscription API until SIGTERM/SIGINT")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=bounded_int(1, 65535), default=8000, help="TCP port to listen on")
    serve.add_argument(
        "--workers",
        type=bounded_int(1, 64),
        default=1,
        help="API worker processes sharing the port; connection limits then apply per worker",
    )

    relay = _add(sub, "relay", cmd_relay, "run the relay (fan-out and delivery) until SIGTERM/SIGINT")
    relay.add_argument(
        "--metrics-port",
        type=bounded_int(0, 65535),
        default=argparse.SUPPRESS,
        help="serve Prometheus metrics on http://HOST:PORT/metrics; 0 serves none"
        " (default: $ROWHOOK_RELAY_METRICS_PORT, else 0)",
    )
    relay.add_argument(
        "--metrics-host",
        default=argparse.SUPPRESS,
        metavar="HOST",
        help="address the metrics port listens on; 0.0.0.0 in a container"
        " (default: $ROWHOOK_RELAY_METRICS_HOST, else 127.0.0.1)",
    )
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
    prune.add_argument("--batch-size", type=bounded_int(1), default=5000, help="rows deleted per transaction")

    demo = _add(sub, "demo", cmd_demo, "run a live demo on an embedded PostgreSQL")
    demo.add_argument(
        "--keep-running", action="store_true", help="keep the API and relay up after the demo until Ctrl-C"
    )
    demo.add_argument("--port", type=bounded_int(0, 65535), default=0, help="API port; 0 picks a free one")
    demo.add_argument(
        "--reset",
        action="store_true",
        help="stop and delete the demo's embedded PostgreSQL data directory, then exit",
    )
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
    except StartupError as exc:
        print(f"rowhook: {exc}", file=sys.stderr)
        return 2
    except RowhookError as exc:
        print(f"rowhook: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"rowhook: {translate(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
