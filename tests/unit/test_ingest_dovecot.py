"""Dovecot lines become login, logout, delete and deliver events that carry their session's client."""

from __future__ import annotations

from mailwarden.events import Event, us_to_iso
from mailwarden.ingest import parse_lines

# Real lines of Dovecot 2.3.19 (shared/recipes §2: its own file format).
FILE_LOG = """\
2026-11-28 04:40:54 lmtp(6903): Info: Connect from 127.0.0.1
2026-11-28 04:40:54 lmtp(bob@example.test)<6903><UP4QFFZbCmv3GgAAg+zDdQ>: Info: msgid=<dv1@sender.test>: saved mail to INBOX
2026-11-28 04:40:54 lmtp(bob@example.test)<6903><UP4QFFZbCmv3GgAAg+zDdQ:T2>: Info: msgid=<dv2@sender.test>: saved mail to INBOX
2026-11-28 04:40:54 lmtp(6903): Info: Disconnect from 127.0.0.1: Logged out (state=READY)
2026-11-28 04:40:54 pop3-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, mpid=7463, secured, session=<I3wyyE5hXpx/AAAB>
2026-11-28 04:40:54 pop3(bob@example.test)<7463><I3wyyE5hXpx/AAAB>: Info: expunge: box=INBOX, uid=1, msgid=<dv1@sender.test>, size=451, from=Alice <alice@sender.test>, subject=dovecot test 1
2026-11-28 04:40:54 pop3(bob@example.test)<7463><I3wyyE5hXpx/AAAB>: Info: Disconnected: Logged out top=0/0, retr=1/483, del=1/3, size=1407
2026-11-28 04:40:55 imap-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=198.51.100.9, lip=127.0.0.1, mpid=7465, TLS, session=<kqoyyE5hSsN/AAAB>
2026-11-28 04:40:55 imap(bob@example.test)<7465><kqoyyE5hSsN/AAAB>: Info: copy from INBOX: box=Archive, uid=1, msgid=<dv2@sender.test>, size=454, from=Alice <alice@sender.test>, subject=dovecot test 2
2026-11-28 04:40:55 imap(bob@example.test)<7465><kqoyyE5hSsN/AAAB>: Info: delete: box=INBOX, uid=2, msgid=<dv2@sender.test>, size=454, from=Alice <alice@sender.test>, subject=dovecot test 2
2026-11-28 04:40:55 imap(bob@example.test)<7465><kqoyyE5hSsN/AAAB>: Info: expunge: box=INBOX, uid=2, msgid=<dv2@sender.test>, size=454, from=Alice <alice@sender.test>, subject=dovecot test 2
2026-11-28 04:40:55 imap(bob@example.test)<7465><kqoyyE5hSsN/AAAB>: Info: Mailbox renamed: Archive -> Archive2
2026-11-28 04:40:55 imap(bob@example.test)<7465><kqoyyE5hSsN/AAAB>: Info: Disconnected: Logged out in=209 out=1257 deleted=1 expunged=1 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0
""".splitlines()


def _events(lines: list[str]) -> list[Event]:
    return [e for e in parse_lines(lines, node="dv1") if e.kind != "unknown"]


def test_lmtp_saved_mail_is_a_delivery_to_the_user_with_message_id_and_folder() -> None:
    delivered = [e for e in _events(FILE_LOG) if e.kind == "deliver" and e.detail.get("protocol") == "lmtp"]
    assert [(e.recipient, e.message_id, e.detail["folder"], e.reason) for e in delivered] == [
        ("bob@example.test", "<dv1@sender.test>", "INBOX", "delivered"),
        ("bob@example.test", "<dv2@sender.test>", "INBOX", "delivered"),
    ]
    assert delivered[0].session == "UP4QFFZbCmv3GgAAg+zDdQ"
    assert delivered[0].node == "dv1" and delivered[0].source == "dovecot"


def test_pop3_expunge_is_a_deletion_by_the_client_address_of_its_login() -> None:
    deleted = [e for e in _events(FILE_LOG) if e.kind == "delete" and e.detail.get("protocol") == "pop3"]
    assert len(deleted) == 1
    event = deleted[0]
    assert event.recipient == "bob@example.test"
    assert event.message_id == "<dv1@sender.test>"
    assert event.client_ip == "192.0.2.7"
    assert event.reason == "access.deleted"
    assert event.detail == {
        "action": "expunge",
        "uid": 1,
        "box": "INBOX",
        "session": "I3wyyE5hXpx/AAAB",
        "protocol": "pop3",
    }


def test_imap_deleted_flag_is_not_yet_a_deletion_but_the_expunge_is() -> None:
    imap = [e for e in _events(FILE_LOG) if e.detail.get("protocol") == "imap"]
    actions = [(e.kind, e.detail.get("action"), e.reason) for e in imap if e.kind in ("delete", "deliver")]
    assert actions == [("deliver", "copy", None), ("delete", "expunge", "access.deleted")]
    assert all(e.client_ip == "198.51.100.9" for e in imap)


# Dovecot 2.3.19 with mail_log `save` and the mail_opened exporter (docs/dovecot.md).
EXPORTER_LOG = """\
2026-11-28 05:53:03 lmtp(bob@example.test)<17482><oJU8FT9sCmtKRAAAg+zDdQ>: Info: save: box=INBOX, uid=6, msgid=<big@s>, size=3193, from=, subject=x
2026-11-28 05:53:03 lmtp(bob@example.test)<17482><oJU8FT9sCmtKRAAAg+zDdQ>: Info: msgid=<big@s>: saved mail to INBOX
2026-11-28 05:53:03 lmtp(full@example.test)<17482><oJU8FT9sCmtKRAAAg+zDdQ:R2>: Info: msgid=<big@s>: save failed to INBOX: Quota exceeded (mailbox for user is full)
2026-11-28 05:57:22 pop3-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=127.0.0.5, lip=127.0.0.1, mpid=16547, session=<4GDrtU9h7e1/AAAF>
2026-11-28 05:57:22 stats: Info: {"event":"mail_opened","hostname":"vm","start_time":"2026-11-28T05:57:22.682192Z","end_time":"2026-11-28T05:57:22.682255Z","categories":["mail","storage","service:pop3","mailbox","maildir"],"fields":{"reason_code":["pop3:cmd_retr"],"duration":34,"user":"bob@example.test","session":"4GDrtU9h7e1/AAAF","mailbox":"INBOX","reason":"access","seq":1,"uid":6,"mail_age_days":0}}
2026-11-28 05:57:22 stats: Info: {"event":"mail_opened","hostname":"vm","categories":["service:lmtp"],"fields":{"user":"bob@example.test","mailbox":"INBOX","uid":6}}
""".splitlines()


def test_lmtp_delivery_gets_the_uid_of_its_save_line_and_a_quota_failure_is_a_deferral() -> None:
    saved, failed = [e for e in _events(EXPORTER_LOG) if e.kind in ("deliver", "defer")]
    assert (saved.recipient, saved.detail["uid"], saved.message_id) == ("bob@example.test", 6, "<big@s>")
    assert (failed.kind, failed.recipient, failed.reply) == (
        "defer",
        "full@example.test",
        "Quota exceeded (mailbox for user is full)",
    )


def test_mail_opened_by_pop3_is_a_retrieval_with_message_id_and_client_address() -> None:
    (opened,) = [e for e in _events(EXPORTER_LOG) if e.kind == "retrieve"]
    assert (opened.recipient, opened.message_id, opened.client_ip, opened.session) == (
        "bob@example.test",
        "<big@s>",
        "127.0.0.5",
        "4GDrtU9h7e1/AAAF",
    )
    assert opened.detail == {
        "protocol": "pop3",
        "action": "open",
        "box": "INBOX",
        "uid": 6,
        "reason_code": "pop3:cmd_retr",
    }


def test_retrieval_is_timed_by_the_exporters_microsecond_start_not_the_whole_second_stamp() -> None:
    (opened,) = [e for e in _events(EXPORTER_LOG) if e.kind == "retrieve"]
    assert us_to_iso(opened.ts) == "2026-11-28T05:57:22.682192+00:00"
    unix = EXPORTER_LOG[4].replace('"2026-11-28T05:57:22.682192Z"', "1795845442.682192")
    (opened,) = [e for e in _events([EXPORTER_LOG[3], unix]) if e.kind == "retrieve"]
    assert us_to_iso(opened.ts) == "2026-11-28T05:57:22.682192+00:00"  # format_args = time-unix


def test_retrieval_start_far_from_its_stamp_or_garbled_keeps_the_stamp() -> None:
    """A log read with the wrong timezone keeps its retrievals in step with its other lines."""
    for start in ('"2026-11-28T06:57:22.682192Z"', '"2026-11-28T05:57:22.682192"', '"yesterday"', "true", "null"):
        line = EXPORTER_LOG[4].replace('"2026-11-28T05:57:22.682192Z"', start)
        (opened,) = [e for e in _events([EXPORTER_LOG[3], line]) if e.kind == "retrieve"]
        assert us_to_iso(opened.ts) == "2026-11-28T05:57:22.000000+00:00", start


def test_logout_carries_the_pop3_and_imap_counts() -> None:
    logouts = [e for e in _events(FILE_LOG) if e.kind == "logout"]
    pop3, imap = logouts
    assert (pop3.detail["retr"], pop3.detail["retr_bytes"], pop3.detail["del"], pop3.detail["del_of"]) == (1, 483, 1, 3)
    assert pop3.client_ip == "192.0.2.7" and pop3.recipient == "bob@example.test"
    assert (imap.detail["deleted"], imap.detail["expunged"]) == (1, 1)


def test_login_records_user_client_local_address_mechanism_and_tls() -> None:
    login = next(e for e in _events(FILE_LOG) if e.kind == "login" and e.detail["protocol"] == "imap")
    assert login.recipient == "bob@example.test"
    assert login.client_ip == "198.51.100.9"
    assert login.session == "kqoyyE5hSsN/AAAB"
    assert login.detail == {
        "protocol": "imap",
        "result": "ok",
        "lip": "127.0.0.1",
        "method": "PLAIN",
        "mpid": 7465,
        "tls": True,
    }


def test_syslog_form_and_dovecot_22_prefixes_are_understood() -> None:
    lines = [
        "Nov 28 04:39:08 vm dovecot: pop3-login: Login: user=<bob@example.test>, method=PLAIN, rip=127.0.0.1, "
        "lip=127.0.0.1, mpid=2727, secured, session=<UAzkwU5hJNl/AAAB>",
        "Nov 28 04:39:08 vm dovecot: pop3(bob@example.test)<2727><UAzkwU5hJNl/AAAB>: Disconnected: Logged out "
        "top=0/0, retr=0/0, del=0/2, size=946",
        "Mar 22 18:18:15 host dovecot: lmtp(22587, email1@example.com): 5GjrDafYTFE7WAAABf1gKA: "
        "msgid=<D4887A5E@linode.com>: saved mail to INBOX",
        "Mar 22 18:18:16 host dovecot: lda(carol@example.com): sieve: msgid=<m@d>: stored mail into mailbox 'Junk'",
        "Mar 21 05:40:15 mss1 dovecot: pop3(info@ise.mn 28678): Disconnected: Logged out top=0/0, retr=22/37259382, "
        "del=38/38, size=38929268",
    ]
    events = _events(lines)
    assert [e.kind for e in events] == ["login", "logout", "deliver", "deliver", "logout"]
    assert events[1].client_ip == "127.0.0.1" and events[0].node == "vm"
    assert (events[2].recipient, events[2].session, events[2].message_id) == (
        "email1@example.com",
        "5GjrDafYTFE7WAAABf1gKA",
        "<D4887A5E@linode.com>",
    )
    assert (events[3].recipient, events[3].detail["folder"], events[3].reason) == (
        "carol@example.com",
        "Junk",
        "delivered.junk",
    )
    assert events[4].recipient == "info@ise.mn" and events[4].detail["del"] == 38


def test_failed_logins_are_login_events_with_result_failed() -> None:
    lines = [
        "2026-11-28 04:32:53 pop3-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts "
        "in 2 secs): user=<bob@example.test>, method=PLAIN, rip=203.0.113.5, lip=127.0.0.1, secured, "
        "session=<gBtqq05htJx/AAAB>",
        "Jan 29 05:13:40 mail dovecot: auth-worker(31326): pam(username,1.2.3.4): unknown user",
        "Jun 13 20:48:11 platypus dovecot: pop3-login: Disconnected (no auth attempts): rip=121.44.24.254, "
        "lip=113.212.99.194, TLS: Disconnected",
    ]
    failed, unknown_user, idle = _events(lines)
    assert (failed.kind, failed.detail["result"], failed.client_ip, failed.recipient) == (
        "login",
        "failed",
        "203.0.113.5",
        "bob@example.test",
    )
    assert failed.reply == "Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs)"
    assert (unknown_user.kind, unknown_user.client_ip, unknown_user.recipient, unknown_user.reply) == (
        "login",
        "1.2.3.4",
        "username",
        "unknown user",
    )
    assert (idle.kind, idle.client_ip) == ("disconnect", "121.44.24.254")


def test_a_user_name_forging_rip_does_not_change_the_client_address() -> None:
    forged = (
        "Oct 12 15:44:45 canyon dovecot: imap-login: Disconnected (auth failed, 1 attempts in 6 secs): "
        "user=<x>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, TLS, session=<evil>>, method=PLAIN, rip=1.1.1.1, "
        "lip=7.7.7.7, TLS, session=<real>"
    )
    (event,) = _events([forged])
    assert event.client_ip == "1.1.1.1"
    assert event.session == "real"
    assert event.detail["lip"] == "7.7.7.7"


def test_a_message_id_forging_fields_does_not_change_uid_or_mailbox() -> None:
    lines = [
        "2026-11-28 04:40:54 pop3(bob@example.test)<7463><S1>: Info: expunge: box=INBOX, uid=7, "
        "msgid=<a>, box=Junk, uid=999, size=1>, size=451",
    ]
    (event,) = _events(lines)
    assert (event.detail["box"], event.detail["uid"]) == ("INBOX", 7)


def test_an_expunge_logged_before_its_login_still_gets_the_client_address() -> None:
    lines = [
        "2026-11-28 04:40:54 pop3(bob@example.test)<7463><S2>: Info: expunge: box=INBOX, uid=1, msgid=<m@x>, size=9",
        "2026-11-28 04:40:54 pop3-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=192.0.2.8, "
        "lip=127.0.0.1, mpid=7463, secured, session=<S2>",
    ]
    deleted = next(e for e in _events(lines) if e.kind == "delete")
    assert deleted.client_ip == "192.0.2.8"


def test_evidence_is_the_raw_line_with_its_origin_and_offset() -> None:
    events = parse_lines(FILE_LOG[:2], node="dv1", origin="dovecot.log")
    (delivered,) = events
    assert delivered.evidence == f"dovecot.log:{len(FILE_LOG[0]) + 1}: {FILE_LOG[1]}"
