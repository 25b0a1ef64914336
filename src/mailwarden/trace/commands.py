"""The trace's command-line actions; cli.py parses the arguments and calls these.

Each returns the process exit code: 0 done, 1 a negative answer (nothing found, a report that
does not verify), 2 an error the user can fix (raised as an exception the CLI prints).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

from mailwarden.catalog import Lang
from mailwarden.config import Config
from mailwarden.store import Store
from mailwarden.text import printable
from mailwarden.trace import bounce, listing, report, retention
from mailwarden.trace import demo as examples
from mailwarden.trace.diagnose import not_found, retention_text
from mailwarden.trace.search import SearchSpec, count, search


def _store(config: Config) -> Store:
    from mailwarden.serve import open_configured_store

    return open_configured_store(config)


def _write(data: bytes, output: str | None, stdout: BinaryIO) -> None:
    if output and output != "-":
        Path(output).write_bytes(data)
    else:
        stdout.write(data)
        stdout.flush()


def trace(config: Config, spec: SearchSpec, *, fmt: str, lang: Lang, counts: bool = False) -> int:
    """`mailwarden trace`: messages as a table, CSV or JSON; "nothing found" explained in words.
    With `counts`: how many recipients of the matching messages have each status and reason."""
    store = _store(config)
    try:
        if counts:
            found = count(store, spec)
            sys.stdout.write(listing.counts_json(found) if fmt == "json" else listing.counts_table(found))
            return 0 if found.total else 1
        result = search(store, spec, retention_days=config.store.retention_days)
        if fmt == "json":
            sys.stdout.write(listing.as_json(result))
        elif fmt == "csv":
            sys.stdout.write(listing.as_csv(result))
        else:
            sys.stdout.write(listing.table(result))
            if result.more:
                page = f"--page {spec.offset // spec.limit + 2} or " if spec.cursor is None else ""
                print(f"(more: {page}--cursor {result.next_cursor})")
        if result.retention is not None:
            print(retention_text(result.retention, lang), file=sys.stderr)
        if not result.rows:
            empty = not_found(store, spec, lang=lang, domains=config.mail.domains, retention=result.retention)
            if fmt == "table":
                print(f"\n{empty.title}\n{empty.summary}\n{empty.remedy}")
                for note in empty.notes:
                    print(f"- {note}")
            return 1
        return 0
    finally:
        store.close()


def explain(
    config: Config,
    trace_id: str,
    *,
    recipient: str | None,
    lang: Lang,
    fmt: str,
    redact: bool,
    output: str | None,
) -> int:
    """`mailwarden explain`: the evidence report for one message (and recipient)."""
    if fmt == "pdf" and not output and sys.stdout.isatty():
        raise report.ReportError("a PDF is binary: write it to a file with -o FILE.pdf")
    store = _store(config)
    try:
        made = report.build(store, trace_id, recipient=recipient, lang=lang, redact=redact, domains=config.mail.domains)
        _write(report.render(made, fmt), output, sys.stdout.buffer)
        return 1 if made.trace is None else 0
    finally:
        store.close()


def verify_report(config: Config, path: str) -> int:
    """`mailwarden verify-report`: does the report still match the store?"""
    store = _store(config)
    try:
        checked = report.verify(store, Path(path))
    finally:
        store.close()
    manifest = checked.manifest
    what = f"report for {manifest.get('id')}" + (f" / {manifest['recipient']}" if manifest.get("recipient") else "")
    if checked.ok:
        print(
            f"OK: {what} matches the store ({len(manifest['event_ids'])} evidence events, SHA-256 {manifest['evidence_sha256']})"
        )
        return 0
    print(f"FAILED: {what}:")
    for problem in checked.problems:
        print(f"  - {problem}")
    return 1


def purge(config: Config, days: int | None) -> int:
    """`mailwarden purge`: delete events older than the retention."""
    keep = days if days is not None else config.store.retention_days
    store = _store(config)
    try:
        removed = retention.purge(store, keep)
    finally:
        store.close()
    print(f"purged {removed} events older than {keep} days")
    return 0


def explain_bounce(config: Config, source: str, *, lang: Lang, fmt: str) -> int:
    """`mailwarden explain-bounce`: what a bounce says, linked to our trace when it names our ref."""
    if source == "-":
        data = sys.stdin.buffer.read(bounce.MAX_INPUT)
    else:
        try:
            data = Path(source).read_bytes()[: bounce.MAX_INPUT]
        except OSError as exc:
            raise report.ReportError(f"cannot read {source}: {exc.strerror}") from None
    found = bounce.parse(data)
    store = _store(config)
    try:
        linked = []
        unattributed: dict[str, bounce.Mismatch] = {}
        for ref in found.refs:
            trace = report.find(store, ref)
            why_not = bounce.mismatch(found, trace)
            if why_not is not None:
                unattributed[ref] = why_not
                continue
            assert trace is not None
            wanted = bounce.bounced_recipient(found, trace)
            made = report.build_for(store, trace, recipient=wanted, lang=lang, domains=config.mail.domains)
            linked.append(made.diagnosis)
    finally:
        store.close()
    meaning = bounce.code_explanation(found, lang)
    if fmt == "json":
        body = {
            "bounce": found.to_json(),
            "meaning": meaning,
            "traces": [d.to_json() for d in linked],
            "unattributed": [{"ref": ref, "why": why} for ref, why in unattributed.items()],
            "lang": lang,
        }
        sys.stdout.write(json.dumps(body, ensure_ascii=False, indent=1) + "\n")
    else:
        sys.stdout.write(bounce.as_text(found, meaning, linked, unattributed, lang))
    return 0 if found.found_anything else 1


def demo(config: Config, server: str | None, config_file: str | None = None) -> int:
    """`mailwarden demo`: example mails against the running instance, then how to trace them."""
    host, port = examples.server_address(config, server)
    if not examples.reachable(host, port):
        raise report.ReportError(
            f"nothing listens on {host}:{port}; start mailwarden first (`make run`) or give --server"
        )
    store = _store(config)
    try:
        played, notes = examples.cases(config, store)
    finally:
        store.close()
    accepted = next((case for case in played if case.name == "accepted"), None)
    mailbox = examples.mailbox_access(config, accepted.recipient if accepted else None)
    if isinstance(mailbox, str):
        notes.append(mailbox)
    else:
        print(f"the customer's mail program at {examples.USUAL_DEVICE}: {examples.check_mail(mailbox)}")
    print(f"playing {len(played)} example mails against {host}:{port}:")
    if "pregreet" in config.check_order and config.pregreet.wait:
        print(f"  (a client not seen for a day waits {config.pregreet.wait:g} s for our greeting: the pregreet check)")
    refs = []
    for case in played:
        outcome = examples.play(case, host, port)
        print(f"  {case.name:20} -> {outcome.code} {printable(outcome.reply, 160)}")
        if outcome.ref:
            refs.append(outcome.ref)
        if case is accepted and outcome.code == 250 and outcome.ref and not isinstance(mailbox, str):
            print(f"another device at {examples.OTHER_DEVICE}: {_fetch_and_delete(config, mailbox, outcome.ref)}")
    for note in notes:
        print(f"  ({note})")
    command = f"mailwarden -c {config_file}" if config_file else "mailwarden"
    print("\nNow look at what happened:")
    print(f"  {command} trace --since 10m")
    for ref in refs[:2]:
        print(f"  {command} explain {ref} --lang de")
    if config.web.listen:
        scheme = "https" if config.web.cert else "http"
        who = (
            f"as {config.web.first_admin} with the password printed at the first start"
            if config.web.first_admin
            else ""
        )
        print(f"  or in the browser: {scheme}://{config.web.listen}/search {f'(log in {who})' if who else ''}".rstrip())
    return 0


def _fetch_and_delete(config: Config, mailbox: examples.Mailbox, ref: str) -> str:
    """The other device's part, for the message the demo just delivered (found by its ref's UIDL)."""
    store = _store(config)
    try:
        uid = examples.delivered_uid(store, ref)
    finally:
        store.close()
    if uid is None:
        return f"found no delivery of {ref} in the store"
    return examples.fetch_and_delete(mailbox, uid)
