"""The private Dovecot of tests/support/dovecot.py, and the evidence lines docs/dovecot.md promises.

These pin what a real Dovecot 2.3 writes with the recommended configuration, so that the log
parser (ingest/dovecot.py) is written against lines that really occur.
"""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import socket

import pytest

from tests.support.dovecot import Dovecot, running_dovecot

pytestmark = pytest.mark.integration

MESSAGE = b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: fixture\r\nMessage-ID: <fx%d@sender.test>\r\n\r\nHello.\r\n"


def _deliver(dovecot: Dovecot, count: int) -> None:
    with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port) as lmtp:
        for n in range(1, count + 1):
            lmtp.sendmail("alice@sender.test", ["bob@example.test"], MESSAGE % n)


def test_pop3_retrieval_and_deletion_leave_opened_and_expunge_lines(dovecot: Dovecot) -> None:
    _deliver(dovecot, 2)
    (save,) = dovecot.wait_for_log("save: box=INBOX, uid=1,")
    assert "msgid=<fx1@sender.test>" in save
    pop = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=30)
    pop.user("bob@example.test")
    pop.pass_("secret")
    assert pop.retr(1)[1][-1] == b"Hello."
    pop.dele(1)
    pop.quit()
    (expunge,) = dovecot.wait_for_log("expunge: box=INBOX, uid=1,")
    assert expunge.split(": Info: ")[0].split(" ", 2)[2].startswith("pop3(bob@example.test)<")
    assert "msgid=<fx1@sender.test>" in expunge
    (opened,) = [
        json.loads(line.split("stats: Info: ", 1)[1])
        for line in dovecot.wait_for_log('"reason_code":["pop3:cmd_retr"]')
    ]
    assert opened["event"] == "mail_opened"
    assert opened["fields"]["user"] == "bob@example.test"
    assert (opened["fields"]["mailbox"], opened["fields"]["uid"]) == ("INBOX", 1)
    (login,) = dovecot.wait_for_log("pop3-login: Info: Login: user=<bob@example.test>")
    assert f"session=<{opened['fields']['session']}>" in login
    (logout,) = dovecot.wait_for_log("Disconnected: Logged out top=")
    assert "retr=1/" in logout and "del=1/2" in logout


def test_imap_fetch_and_expunge_leave_opened_delete_and_expunge_lines(dovecot: Dovecot) -> None:
    _deliver(dovecot, 1)
    dovecot.wait_for_log("save: box=INBOX, uid=1,")
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=30)
    imap.login("bob@example.test", "secret")
    imap.select("INBOX")
    imap.uid("FETCH", "1", "(BODY.PEEK[])")
    imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()
    (opened,) = [
        json.loads(line.split("stats: Info: ", 1)[1])
        for line in dovecot.wait_for_log('"imap:fetch_body"')
        if '"service:imap"' in line
    ]
    assert opened["fields"]["remote_ip"] == "127.0.0.1"
    assert opened["fields"]["uid"] == 1
    dovecot.wait_for_log("delete: box=INBOX, uid=1, msgid=<fx1@sender.test>")
    dovecot.wait_for_log("expunge: box=INBOX, uid=1, msgid=<fx1@sender.test>")
    dovecot.wait_for_log("Disconnected: Logged out in=")


def test_a_user_over_quota_is_refused_by_lmtp_after_data_while_the_other_recipient_gets_the_mail() -> None:
    users = {"bob@example.test": "secret", "full@example.test": "secret"}
    with running_dovecot(users, quota_bytes={"full@example.test": 100}) as dovecot:
        with socket.create_connection(("127.0.0.1", dovecot.lmtp_port), timeout=30) as sock:
            replies = sock.makefile("rb")

            def reply() -> bytes:
                line = replies.readline()
                while line[3:4] == b"-":
                    line = replies.readline()
                return line

            reply()
            for command in (b"LHLO test", b"MAIL FROM:<alice@sender.test>", b"RCPT TO:<bob@example.test>"):
                sock.sendall(command + b"\r\n")
                assert reply().startswith(b"250")
            sock.sendall(b"RCPT TO:<full@example.test>\r\nDATA\r\n")
            assert reply().startswith(b"250")
            assert reply().startswith(b"354")
            sock.sendall(MESSAGE % 1 + b"x" * 500 + b"\r\n.\r\n")
            assert reply().startswith(b"250 2.0.0 <bob@example.test>")
            assert reply().startswith(b"552 5.2.2 <full@example.test> Quota exceeded")
        dovecot.wait_for_log("save failed to INBOX: Quota exceeded")
