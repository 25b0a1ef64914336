"""The `mailwarden` command line. Each subcommand parses its arguments and calls into its room."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mailwarden import __version__
from mailwarden.config import (
    ENV_VAR,
    INGEST_FORMATS,
    STARTER_PORT,
    Config,
    ConfigError,
    docs_markdown,
    load,
    starter,
)
from mailwarden.events import Event, us_to_iso
from mailwarden.store import EventQuery, StoreError, open_store
from mailwarden.text import printable
from mailwarden.timespec import TimeSpecError, parse_time
from mailwarden.trace.report import FORMATS, ReportError

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

    return serve(config, args.config)


def cmd_users(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import mailboxes
    from mailwarden.addresses import normalize_mailbox

    store = open_store(config)
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


def cmd_accounts(args: argparse.Namespace, config: Config) -> int:
    from mailwarden.web import accounts

    store = open_store(config)
    try:
        if args.action == "list":
            for account in store.list_accounts():
                print(f"{account.name}\t{account.role}\t{' '.join(account.domains)}".rstrip())
        elif args.action == "add":
            made = accounts.add(store, args.name, args.role, args.domain or [], _read_password(args))
            print(f"added {made.role} {made.name}" + (f" for {', '.join(made.domains)}" if made.domains else ""))
        elif args.action == "remove":
            accounts.remove(store, args.name)
            print(f"removed {args.name} (its sessions ended)")
        elif args.action == "passwd":
            accounts.set_password(store, args.name, _read_password(args))
            print(f"password of {args.name} changed (its sessions ended)")
        return 0
    finally:
        store.close()


def cmd_web(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from mailwarden.web import workers
    from mailwarden.web.server import run_alone

    processes = workers.count(config)
    if processes > 1:
        return workers.run(config, processes)
    store = open_store(config)
    try:
        asyncio.run(run_alone(config, store))
    finally:
        store.close()
    return 0


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    if args.action == "docs":
        sys.stdout.write(docs_markdown())
        return 0
    if args.action == "init":
        return _init_config(args.config, args.port)
    from mailwarden import mailboxes
    from mailwarden.checks import build_chain
    from mailwarden.checks.base import Services

    store = open_store(config)
    try:
        build_chain(Services(config=config, store=store, local_domains=frozenset(config.mail.domains)))
        gaps = mailboxes.postmaster_gaps(config, store)
    finally:
        store.close()
    if gaps:
        print(f"warning: {mailboxes.postmaster_warning(gaps)}")
    print("configuration OK")
    print(f"checks, in this order: {', '.join(config.check_order)}")
    return 0


def _init_config(path: str | None, port: int) -> int:
    """`config init`: write the config `make run` starts with, never over an existing one."""
    if not path:
        raise ConfigError("name the file to write with -c FILE, e.g. mailwarden -c var/mailwarden.toml config init")
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with file.open("x") as out:
            out.write(starter(port))
    except FileExistsError:
        raise ConfigError(f"{file} exists already; it is kept (remove it to start over)") from None
    print(f"wrote {file}: mailwarden on loopback, SMTP port {port}, POP3 port {port + 1}; edit it and restart")
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

    query = EventQuery(
        since_us=parse_time(args.since) if args.since else None,
        until_us=parse_time(args.until) if args.until else None,
        ref=args.ref,
        session=args.session,
        limit=args.limit,
    )
    store = open_store(config)
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


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from mailwarden.ingest import commands

    return commands.ingest(
        config,
        args.paths,
        follow=args.follow,
        fmt=args.format,
        node=args.node,
        reimport=args.reimport,
        progress=args.progress,
    )


def cmd_trace(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands
    from mailwarden.trace.search import AddressFilter, SearchSpec

    limit = args.limit
    spec = SearchSpec(
        sender=AddressFilter.parse(args.sender) if args.sender else None,
        recipient=AddressFilter.parse(args.recipient) if args.recipient else None,
        since_us=parse_time(args.since) if args.since else None,
        until_us=parse_time(args.until) if args.until else None,
        ref=args.ref,
        message_id=args.message_id,
        queue_id=args.queue_id,
        client=args.client_ip,
        status=args.status,
        reason=args.reason,
        limit=limit,
        offset=(args.page - 1) * limit if args.page > 0 else -1,
        cursor=args.cursor,
    )
    return commands.trace(config, spec, fmt=args.format, lang=args.lang, counts=args.count)


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands

    return commands.explain(
        config,
        args.id,
        recipient=args.recipient,
        lang=args.lang,
        fmt=args.format,
        redact=not args.no_redact,
        output=args.output,
    )


def cmd_verify_report(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands

    return commands.verify_report(config, args.file)


def cmd_purge(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands

    return commands.purge(config, args.days)


def cmd_store(args: argparse.Namespace, config: Config) -> int:
    from mailwarden.store import commands

    if args.action == "forget-node":
        return commands.forget_node(config, args.name)
    if args.action == "migrate":
        return commands.migrate(config, args.source, args.target, progress=args.progress)
    return commands.reindex(config, progress=args.progress)


def cmd_check_sender(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import sendercheck

    return sendercheck.command(config, args.target, args.format)


def cmd_explain_bounce(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands

    return commands.explain_bounce(config, args.source, lang=args.lang, fmt=args.format)


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from mailwarden import trace_commands as commands

    return commands.demo(config, args.server, args.config)


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

    accounts = command("accounts", cmd_accounts, "manage the tracking center's accounts (admin, support, customer)")
    accounts.add_argument("action", choices=["add", "list", "remove", "passwd"])
    accounts.add_argument("name", nargs="?", metavar="NAME", help="account name (not for list)")
    accounts.add_argument(
        "--role",
        choices=["admin", "support", "customer"],
        help="for add: admin (everything), support (every message, audited) or customer (only mail to its domains)",
    )
    accounts.add_argument(
        "--domain", action="append", metavar="D", help="for add with --role customer: a domain it owns (repeatable)"
    )
    accounts.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    command("web", cmd_web, "run only the tracking center ([web] listen), without the gateway")

    cfg = command(
        "config", cmd_config, "validate the configuration, print its reference, or write a local one (init, -c FILE)"
    )
    cfg.add_argument("action", choices=["check", "docs", "init"])
    cfg.add_argument(
        "--port",
        type=int,
        default=STARTER_PORT,
        help=f"init: SMTP port, POP3 and the web center on the next two (default {STARTER_PORT})",
    )

    events = command("events", cmd_events, "print raw events")
    events.add_argument("--since", help="e.g. 1h, 30m, 7d or an ISO time (default: all)")
    events.add_argument("--until", help="ISO time or duration ago")
    events.add_argument("--ref", help="only this transaction reference")
    events.add_argument("--session", help="only this connection")
    events.add_argument("--limit", type=int, help="at most this many events")
    events.add_argument("--format", choices=["table", "json"], default="table")

    ingest = command("ingest", cmd_ingest, "read logs of Postfix, Dovecot, Exim, ... into events")
    ingest.add_argument(
        "paths", nargs="+", metavar="PATH|-", help="log files (plain or .gz, rotated series welcome) or - for stdin"
    )
    ingest.add_argument("--follow", action="store_true", help="keep reading new lines like tail -F until interrupted")
    ingest.add_argument(
        "--format", choices=INGEST_FORMATS, default=None, help="parser for every line (default: [ingest] format, auto)"
    )
    ingest.add_argument(
        "--node", help="node name for lines without a host field (default: [ingest] node or [node] name)"
    )
    ingest.add_argument("--reimport", action="store_true", help="read files from the start even if imported before")
    ingest.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: on a terminal)",
    )

    trace = command("trace", cmd_trace, "find messages and show what happened to them")
    trace.add_argument("--from", dest="sender", metavar="A", help="sender: a@b.test, @b.test (domain) or *part*")
    trace.add_argument("--to", dest="recipient", metavar="A", help="recipient: a@b.test, @b.test (domain) or *part*")
    trace.add_argument("--since", help="start of the window: 30m, 2h, 7d (ago) or an ISO time (UTC if no offset)")
    trace.add_argument("--until", help="end of the window: duration ago or ISO time (default: now)")
    trace.add_argument("--ref", type=_ref, help="the reference from a reply (ref=...)")
    trace.add_argument("--message-id", help="the Message-ID header, with its <>")
    trace.add_argument("--queue-id", help="a foreign MTA's queue id (ingested logs)")
    trace.add_argument("--client-ip", metavar="IP[/N]", help="sending client address or network")
    trace.add_argument("--status", help="only recipients with this status (rejected, delivered, deleted, ...)")
    trace.add_argument("--reason", help="only messages decided for this reason code (e.g. rcpt.unknown_user)")
    trace.add_argument("--format", choices=["table", "json", "csv"], default="table")
    trace.add_argument("--limit", type=int, default=50, help="messages per page (default 50)")
    trace.add_argument("--page", type=int, default=1, help="page number, newest first (default 1)")
    trace.add_argument("--cursor", help="continue after the message whose `cursor` this is (faster than --page)")
    trace.add_argument("--count", action="store_true", help="count recipients by status and reason instead")
    trace.add_argument("--lang", choices=["en", "de"], default="en", help="language of notes and 'nothing found'")

    explain = command("explain", cmd_explain, "evidence report for one message: verdict, timeline, evidence")
    explain.add_argument("id", metavar="REF|TRACE-ID", help="a ref (from a reply) or a trace id (E123) from `trace`")
    explain.add_argument("--recipient", help="the recipient to explain (default: the first)")
    explain.add_argument("--lang", choices=["en", "de"], default="en")
    explain.add_argument("--format", choices=list(FORMATS), default="text")
    explain.add_argument("--no-redact", action="store_true", help="show third parties' addresses (internal use)")
    explain.add_argument(
        "-o", "--output", metavar="FILE", help="write the report to FILE (needed for pdf on a terminal)"
    )

    verify = command("verify-report", cmd_verify_report, "check a report made by `explain` against the store")
    verify.add_argument("file", metavar="FILE")

    check = command(
        "check-sender",
        cmd_check_sender,
        "check a sending domain or address as the gateway would: MX, reverse DNS, SPF, DNS lists "
        "(exit status 1 when problems are found)",
    )
    check.add_argument("target", metavar="DOMAIN|IP")
    check.add_argument("--format", choices=["text", "json"], default="text")

    purge = command("purge", cmd_purge, "delete events older than [store] retention_days")
    purge.add_argument("--days", type=int, help="keep this many days instead of the configured retention")

    store = command("store", cmd_store, "maintain the store")
    # Each action a parser of its own with fixed positionals: with one list of them after the action,
    # argparse took none before an option (`migrate --progress SOURCE TARGET` was refused).
    actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, *, progress: bool) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        _config_option(p, top=False)
        if progress:
            p.add_argument(
                "--progress",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="progress line on stderr (default: on a terminal)",
            )
        return p

    action("reindex", "rebuild the message index from the events", progress=True)
    forget = action("forget-node", "free the ref id of a node that no longer runs", progress=False)
    forget.add_argument("name", metavar="NAME", help="the node's [node] name")
    migrate = action("migrate", "copy a store's history into another (resumable)", progress=True)
    migrate.add_argument("source", metavar="SOURCE_URL", help="the store to copy from")
    migrate.add_argument("target", metavar="TARGET_URL", help="the store to copy into")

    bounce = command("explain-bounce", cmd_explain_bounce, "explain a bounce (DSN or pasted text) a sender received")
    bounce.add_argument("source", metavar="FILE|-", help="the bounce message, or - to read it from standard input")
    bounce.add_argument("--lang", choices=["en", "de"], default="en")
    bounce.add_argument("--format", choices=["text", "json"], default="text")

    demo = command("demo", cmd_demo, "play example mails against the running instance, to see real traces")
    demo.add_argument("--server", metavar="HOST:PORT", help="the SMTP address (default: the first of [smtp] listen)")
    return parser


def _ref(text: str) -> str:
    from mailwarden.refs import is_ref, normalize

    if not is_ref(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ref (12 characters like 1BRD52F70000)")
    return normalize(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        writing = args.command == "config" and args.action == "init"
        config = Config() if writing else load(args.config)  # init writes the file -c names
        logging.getLogger().setLevel(config.log.level.upper())
        if args.command == "users" and args.action != "list" and not args.address:
            parser.error("users add|remove|passwd|set need an ADDRESS")
        if args.command == "accounts" and args.action != "list" and not args.name:
            parser.error("accounts add|remove|passwd need a NAME")
        if args.command == "accounts" and args.action == "add" and not args.role:
            parser.error("accounts add needs --role admin|support|customer")
        handler: Handler = args.handler
        return handler(args, config)
    except (ConfigError, StoreError, TimeSpecError, ValueError, ReportError) as exc:
        print(f"mailwarden: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
