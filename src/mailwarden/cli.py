"""The `mailwarden` command line. Each subcommand parses its arguments and calls into its room."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence

from mailwarden import __version__
from mailwarden.config import ENV_VAR, Config, ConfigError, docs_markdown, load
from mailwarden.events import Event, us_to_iso
from mailwarden.store import EventQuery, StoreError
from mailwarden.text import printable
from mailwarden.timespec import TimeSpecError, parse_time

Handler = Callable[[argparse.Namespace, Config], int]


def _config_option(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help=f"config file (TOML); default: ${ENV_VAR} or built-in defaults",
    )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise StoreError("the passwords differ")
    return first


# ---------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from mailwarden.serve import serve

    return serve(config)


def cmd_users(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import mailboxes
    from mailwarden.addresses import normalize_mailbox
    from mailwarden.serve import open_configured_store

    store = open_configured_store(config)
    try:
        if args.action == "list":
            for mailbox in store.list_mailboxes():
                print(mailbox.address)
            return 0
        address = normalize_mailbox(args.address)
        if args.action == "add":
            mailboxes.add(config, store, address, _read_password(args))
            print(f"added {address}")
        elif args.action == "remove":
            if not store.remove_mailbox(address):
                raise StoreError(f"no mailbox {address}; `mailwarden users list` shows the existing ones")
            print(f"removed {address} (its Maildir stays on disk)")
        elif args.action == "set":
            from mailwarden.checks.content import parse_setting

            found = store.get_mailbox(address)
            if found is None:
                raise StoreError(f"no mailbox {address}; `mailwarden users list` shows the existing ones")
            settings = dict(found.settings)
            for item in args.settings:
                name, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r}: write settings as NAME=VALUE, e.g. spam_reject=off")
                settings[name.strip()] = parse_setting(name.strip(), value.strip())
            store.update_mailbox_settings(address, settings)
            print(f"settings of {address}: {json.dumps(settings, sort_keys=True)}")
        elif args.action == "passwd":
            if not store.set_password(address, mailboxes.hash_password(_read_password(args))):
                raise StoreError(f"no mailbox {address}; `mailwarden users list` shows the existing ones")
            print(f"password of {address} changed")
        return 0
    finally:
        store.close()


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    if args.action == "docs":
        sys.stdout.write(docs_markdown())
        return 0
    from mailwarden.checks import build_chain
    from mailwarden.checks.base import Services
    from mailwarden.serve import open_configured_store

    store = open_configured_store(config)
    try:
        build_chain(Services(config=config, store=store, local_domains=frozenset(config.mail.domains)))
    finally:
        store.close()
    print("configuration OK")
    return 0


def _event_row(event: Event) -> str:
    parts = [us_to_iso(event.ts)[:23], event.source, event.kind, event.ref or "-"]
    for name in ("client_ip", "sender", "recipient", "reason"):
        value = getattr(event, name)
        if value is not None:
            parts.append(f"{name}={printable(str(value), 120)}")
    if event.smtp_code is not None:
        parts.append(f"code={event.smtp_code}")
    return " ".join(parts)


def cmd_events(args: argparse.Namespace, config: Config) -> int:
    from mailwarden.serve import open_configured_store

    query = EventQuery(
        since_us=parse_time(args.since) if args.since else None,
        until_us=parse_time(args.until) if args.until else None,
        ref=args.ref,
        session=args.session,
        limit=args.limit,
    )
    store = open_configured_store(config)
    try:
        events = store.query_events(query)
    finally:
        store.close()
    if args.format == "json":
        json.dump([e.to_json() for e in events], sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    else:
        for event in events:
            print(_event_row(event))
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailwarden", description="Inbound mail gateway with evidence.")
    parser.add_argument("--version", action="version", version=f"mailwarden {__version__}")
    _config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _config_option(p, top=False)
        p.set_defaults(handler=handler)
        return p

    command("serve", cmd_serve, "run the configured services until SIGTERM")

    users = command("users", cmd_users, "manage mailboxes")
    users.add_argument("action", choices=["add", "list", "remove", "passwd", "set"])
    users.add_argument("address", nargs="?", help="mailbox address (not for list)")
    users.add_argument(
        "settings", nargs="*", metavar="NAME=VALUE", help="for set: spam_reject=on|off, macros=reject|tag|off"
    )
    users.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    cfg = command("config", cmd_config, "validate the configuration or print its reference")
    cfg.add_argument("action", choices=["check", "docs"])

    events = command("events", cmd_events, "print raw events")
    events.add_argument("--since", help="e.g. 1h, 30m, 7d or an ISO time (default: all)")
    events.add_argument("--until", help="ISO time or duration ago")
    events.add_argument("--ref", help="only this transaction reference")
    events.add_argument("--session", help="only this connection")
    events.add_argument("--limit", type=int, help="at most this many events")
    events.add_argument("--format", choices=["table", "json"], default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load(args.config)
        logging.getLogger().setLevel(config.log.level.upper())
        if args.command == "users" and args.action != "list" and not args.address:
            parser.error("users add|remove|passwd|set need an ADDRESS")
        handler: Handler = args.handler
        return handler(args, config)
    except (ConfigError, StoreError, TimeSpecError, ValueError) as exc:
        print(f"mailwarden: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
