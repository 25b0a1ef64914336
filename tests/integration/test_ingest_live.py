"""Logs written live by a real Postfix and a real Dovecot, ingested, tell each message's fate.

One scripted run: a delivery by LMTP to Dovecot that a POP3 client then fetches and deletes, a
NOQUEUE reject, a deferral, and a bounce with its notification. The logs are taken twice: in the
daemons' own file format, and through rsyslog (a private rsyslogd on a private socket; Postfix and
Dovecot see that socket as /dev/log in their own mount namespace, so nothing on the machine
changes), which also forwards every message to `mailwarden serve`'s syslog receiver.
"""

from __future__ import annotations

import json
import os
import poplib
import shutil
import signal
import smtplib
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import tests.support.dovecot as dovecot_support
import tests.support.postfix as postfix_support
from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.postfix import Postfix, running_postfix
from tests.support.remote_smtp import remote_smtp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="Postfix and Dovecot fixtures need root"),
    pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is not installed"),
]


def _remote_rcpt(address: str) -> str:
    """The far side for dest.test: 550 for reject-*, 451 for defer-*, 250 otherwise."""
    if address.startswith("reject-"):
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
    if address.startswith("defer-"):
        return f"451 4.7.1 <{address}>: Recipient address rejected: Greylisted, try again later"
    return "250 2.1.5 OK"


def remote_server() -> AbstractContextManager[int]:
    return remote_smtp(_remote_rcpt, "250 2.0.0 Ok: queued as REMOTE1")


def _message(message_id: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"], message["Message-ID"] = (
        "alice@sender.test",
        recipient,
        "live",
        message_id,
    )
    message.set_content("hello\n")
    return message


def scripted_run(postfix: Postfix, dovecot: Dovecot, wait_for: Any) -> None:
    """Delivery, NOQUEUE reject, deferral, bounce; then POP3 fetches and deletes the delivered one."""
    postfix.submit("alice@sender.test", ["bob@example.test"], _message("<live-1@sender.test>", "bob@example.test"))
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        postfix.submit("alice@sender.test", ["blocked@example.test"], _message("<live-2@sender.test>", "x"))
    postfix.submit("alice@sender.test", ["defer-me@dest.test"], _message("<live-3@sender.test>", "defer-me@dest.test"))
    postfix.submit(
        "alice@sender.test", ["reject-me@dest.test"], _message("<live-4@sender.test>", "reject-me@dest.test")
    )
    postfix.wait_delivered(1)  # the bounce notification, in alice's local Maildir
    wait_for("status=deferred")
    wait_for("saved mail to INBOX")
    pop = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=30)
    try:
        pop.user("bob@example.test")
        pop.pass_("secret")
        pop.retr(1)
        pop.dele(1)
    finally:
        pop.quit()
    wait_for("expunge: box=INBOX")
    wait_for("Logged out top=")


def postfix_settings(remote_port: int, lmtp: str) -> dict[str, str]:
    return {
        "relayhost": f"[127.0.0.1]:{remote_port}",
        "transport_maps": f"inline:{{ example.test=lmtp:inet:{lmtp} }}",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{ {blocked@example.test = REJECT 5.7.1 "
        "blocked by local policy} }, permit_mynetworks, reject_unauth_destination",
    }


def trace(instance: Mailwarden, *args: str) -> list[dict[str, Any]]:
    done = instance.cli("trace", "--since", "1d", "--format", "json", *args)
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def assert_every_fate(instance: Mailwarden) -> None:
    """What a support person would look up: each recipient's status, from the ingested events only."""
    (delivered,) = trace(instance, "--message-id", "<live-1@sender.test>")
    (bob,) = delivered["recipients"]
    assert (bob["address"], bob["status"], bob["reason"]) == ("bob@example.test", "deleted", "access.deleted")
    assert [(a["kind"], a["client_ip"], a["protocol"]) for a in bob["accesses"]] == [
        ("retrieve", "127.0.0.1", "pop3"),  # RETR (Dovecot's mail_opened event)
        ("delete", "127.0.0.1", "pop3"),  # DELE + QUIT (mail_log expunge)
    ]
    assert {e["source"] for e in delivered["events"]} == {"postfix", "dovecot"}
    assert delivered["sender"] == "alice@sender.test" and delivered["client_ip"] == "127.0.0.1"

    (refused,) = trace(instance, "--to", "blocked@example.test")
    (blocked,) = refused["recipients"]
    assert (blocked["status"], blocked["smtp_code"], blocked["enhanced_code"]) == ("rejected", 554, "5.7.1")
    assert "blocked by local policy" in blocked["reply"]

    (deferred,) = trace(instance, "--to", "defer-me@dest.test")
    assert deferred["message_id"] == "<live-3@sender.test>"
    assert deferred["recipients"][0]["status"] == "deferred"
    assert deferred["recipients"][0]["reason"] == "greylisted"

    (bounced,) = trace(instance, "--to", "reject-me@dest.test")
    (rejected,) = bounced["recipients"]
    assert (rejected["status"], rejected["reason"], rejected["smtp_code"]) == ("bounced", "rcpt.unknown_user", 550)
    notification = [e for e in bounced["events"] if e["detail"].get("notification") == "non-delivery"]
    assert len(notification) == 1
    child = notification[0]["detail"]["notification_queue_id"]
    (returned,) = trace(instance, "--queue-id", child)
    assert returned["recipients"][0]["address"] == "alice@sender.test"
    assert returned["recipients"][0]["status"] == "delivered"


def _ingest(instance: Mailwarden, *paths: str) -> str:
    # Dovecot ran on the same machine as Postfix, whose lines name it "mta".
    return instance.cli("ingest", "--node", "mta", *paths).stdout


def test_postfix_and_dovecot_file_logs_reconstruct_each_message(tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw", {"ingest": {"timezone": ""}})
    with (
        remote_server() as remote_port,
        running_dovecot({"bob@example.test": "secret"}) as dovecot,
        running_postfix(
            local_domains=["sender.test"], settings=postfix_settings(remote_port, dovecot.lmtp_address)
        ) as postfix,
    ):

        def wait_for(needle: str) -> None:
            deadline = time.monotonic() + 60
            while needle not in postfix.log_text() + dovecot.log_text():
                assert time.monotonic() < deadline, f"{needle!r} never logged"
                time.sleep(0.1)

        scripted_run(postfix, dovecot, wait_for)
        maillog = tmp_path / "maillog"
        maillog.write_text(postfix.log_text())
        dovecot_log = tmp_path / "dovecot.log"
        dovecot_log.write_text(dovecot.log_text())
    summary = _ingest(instance, str(maillog), str(dovecot_log))
    assert "unknown lines (kept as `unknown` events): 0" in summary, summary
    assert_every_fate(instance)


# ---------------------------------------------------------------------------- through rsyslog
_NAMESPACED = """\
#!/bin/sh
# Run the program in its own mount namespace where /dev/log is the test's private syslog socket.
work=$(mktemp -d {root}/ns.XXXXXX)
mkdir "$work/upper" "$work/work"
exec unshare --mount --propagation private sh -c '
  mount -t overlay overlay -o lowerdir=/dev,upperdir="$1/upper",workdir="$1/work" /dev &&
  ln -s {socket} /dev/log && shift && exec "$@"' sh "$work" {program} "$@"
"""


@contextmanager
def private_rsyslog(root: Path, forward_port: int) -> Iterator[tuple[Path, Path, Path]]:
    """rsyslogd reading a private socket; writes mail.log (traditional), mail-rfc3339.log, forwards by TCP."""
    socket = root / "log.sock"
    (root / "spool").mkdir(parents=True)
    config = root / "rsyslog.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            global(workDirectory="{root}/spool")
            module(load="imuxsock" SysSock.Use="off")
            input(type="imuxsock" Socket="{socket}")
            mail.* action(type="omfile" file="{root}/mail.log" template="RSYSLOG_TraditionalFileFormat")
            mail.* action(type="omfile" file="{root}/mail-rfc3339.log" template="RSYSLOG_FileFormat")
            mail.* action(type="omfwd" target="127.0.0.1" port="{forward_port}" protocol="tcp"
                          TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
            """
        )
    )
    process = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(config), "-i", str(root / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "rsyslogd.err", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, (root / "rsyslogd.err").read_text()
            assert time.monotonic() < deadline, "rsyslogd did not create its socket"
            time.sleep(0.05)
        yield socket, root / "mail.log", root / "mail-rfc3339.log"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _namespaced(root: Path, socket: Path, program: str) -> str:
    wrapper = root / f"{Path(program).name}-namespaced"
    wrapper.write_text(_NAMESPACED.format(root=root, socket=socket, program=program))
    wrapper.chmod(0o755)
    return str(wrapper)


def test_postfix_and_dovecot_through_rsyslog_reconstruct_each_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver_port = free_port()
    root = Path(tempfile.mkdtemp(prefix="mw-rsyslog-"))
    root.chmod(0o755)  # the daemons' users reach the socket through it
    try:
        with private_rsyslog(root, receiver_port) as (socket, mail_log, rfc3339_log):
            socket.chmod(0o666)
            monkeypatch.setattr(postfix_support, "POSTFIX", _namespaced(root, socket, postfix_support.POSTFIX))
            monkeypatch.setattr(dovecot_support, "DOVECOT", _namespaced(root, socket, dovecot_support.DOVECOT))
            overrides = {"ingest": {"syslog_listen": [f"127.0.0.1:{receiver_port}"], "syslog_protocols": ["tcp"]}}
            with (
                running(tmp_path / "received", overrides) as received,
                remote_server() as remote_port,
                running_dovecot(
                    {"bob@example.test": "secret"}, extra_config="log_path = syslog\ninfo_log_path = syslog\n"
                ) as dovecot,
                running_postfix(
                    local_domains=["sender.test"],
                    settings={**postfix_settings(remote_port, dovecot.lmtp_address), "maillog_file": ""},
                ) as postfix,
            ):

                def wait_for(needle: str) -> None:
                    deadline = time.monotonic() + 60
                    while not mail_log.exists() or needle not in mail_log.read_text(errors="replace"):
                        assert time.monotonic() < deadline, f"{needle!r} never reached rsyslog"
                        time.sleep(0.1)

                scripted_run(postfix, dovecot, wait_for)
                # The receiver releases held events once the input has been quiet for two seconds.
                deadline = time.monotonic() + 60
                while True:
                    try:
                        assert_every_fate(received)
                        break
                    except (AssertionError, ValueError, subprocess.CalledProcessError):
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(1)
            traditional = mail_log.read_text(errors="replace")
            rfc3339 = rfc3339_log.read_text(errors="replace")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert " dovecot: pop3-login: Login: " in traditional and " postfix/smtpd[" in traditional
    for name, text in (("traditional", traditional), ("rfc3339", rfc3339)):
        copy = tmp_path / f"{name}.log"
        copy.write_text(text)
        instance = Mailwarden(tmp_path / name)
        summary = _ingest(instance, str(copy))
        assert "unknown lines (kept as `unknown` events): 0" in summary, summary
        assert_every_fate(instance)
