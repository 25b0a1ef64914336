"""Configuration: one TOML file, validated at start, every option documented with its default.

The models below are the single source of truth: `docs/configuration.md` is generated from
them (`mailwarden config docs`) and a test keeps the two in step. Validation errors name the
key, the problem and the fix (see `ConfigError`). Relative paths are resolved against the
directory of the config file (or the working directory when there is none).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailwarden.scan.attachments import DANGEROUS_EXTENSIONS
from mailwarden.text import decimal

ENV_VAR = "MAILWARDEN_CONFIG"


class ConfigError(Exception):
    """A configuration problem, worded for the operator: which key, what is wrong, how to fix it."""


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raise ValueError with a usable message."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{value!r}: missing ']' after an IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:  # bare IPv6 without port
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{value!r}: the host part is empty")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{value!r}: give a port, as in 127.0.0.1:2525 or [::1]:2525")
        return host, default_port
    port = decimal(port_text, max_digits=5)
    if port is None or not 0 < port < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return host, port


def _check_listen(values: list[str]) -> list[str]:
    for value in values:
        parse_hostport(value)
    return values


def _check_optional_listen(value: str) -> str:
    """One listen address, or "" for none (a listener that is off unless asked for)."""
    if value:
        parse_hostport(value)
    return value


HostPort = Annotated[str, Field(pattern=r"\S")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    name: str = Field(
        default_factory=socket.gethostname,
        description="Name of this node in events and refs; must differ between nodes sharing a store. "
        "Default: the machine's hostname.",
    )


class SmtpTimeouts(_Section):
    command: float = Field(
        300.0,
        gt=0,
        description="Seconds to wait for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes).",
    )
    data_block: float = Field(
        180.0,
        gt=0,
        description="Seconds of silence allowed while receiving DATA (RFC 5321 4.5.3.2.5: 3 minutes); "
        "a slow but steady upload is never cut off.",
    )
    session: float = Field(3600.0, gt=0, description="Upper bound on one connection's total duration in seconds.")


class SmtpConfig(_Section):
    listen: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:2525"],
        description='Addresses to accept SMTP on, as "host:port" or "[v6]:port".',
    )
    hostname: str = Field(
        default_factory=socket.gethostname,
        description="Our name in the greeting, EHLO reply and Received header. Default: the machine's hostname.",
    )
    max_message_size: int = Field(
        26_214_400, ge=1024, description="Largest message accepted, in bytes (advertised as SIZE)."
    )
    max_recipients: int = Field(100, ge=1, description="Recipients per transaction; more get 452 4.5.3.")
    max_connections: int = Field(
        500, ge=1, description="Simultaneous connections in total; more get 421 4.3.2 (infra.server_busy)."
    )
    max_connections_per_ip: int = Field(
        20,
        ge=1,
        description="Simultaneous connections from one client address; more get 421 4.7.0 (client.too_many_connections).",
    )
    max_command_line: int = Field(
        512, ge=512, description="Longest command line in bytes incl. CRLF (RFC 5321: 512); longer gets 500 5.5.2."
    )
    max_line_length: int = Field(
        65_536,
        ge=1001,
        description="Longest line inside a message in bytes. RFC 5322 says 998, but real mail has longer "
        "lines; a message with a longer line gets 500 5.5.2.",
    )
    memory_spool_limit: int = Field(
        1_048_576,
        ge=65536,
        description="Messages larger than this many bytes are spooled to disk while they arrive.",
    )
    bare_newline: Literal["normalize", "reject"] = Field(
        "normalize",
        description='A bare LF or CR in a message: "normalize" to CRLF (like Postfix\'s '
        'smtpd_forbid_bare_newline = normalize) or "reject" with 550 5.5.2 (protocol.bare_lf).',
    )
    proxy_protocol: bool = Field(
        False, description="Expect a HAProxy PROXY header (v1 or v2) on every connection, from a load balancer."
    )
    proxy_trusted: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Networks allowed to send a PROXY header; others are disconnected.",
    )
    timeouts: SmtpTimeouts = Field(default_factory=SmtpTimeouts, description="Timeouts (seconds).")
    workers: int = Field(
        0,
        ge=0,
        le=63,
        description="SMTP worker processes, each with its own event loop on its own core; 0 = one per CPU core. "
        "Connection and rate limits hold for all of them together; a reload (SIGHUP) restarts them one by one.",
    )

    _listen = field_validator("listen")(_check_listen)

    @property
    def worker_count(self) -> int:
        """`workers`, with 0 resolved to the cores this process may run on (at most 63)."""
        return self.workers or min(len(os.sched_getaffinity(0)), 63)

    @field_validator("proxy_trusted")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value, strict=False)
        return values


class MailConfig(_Section):
    domains: list[str] = Field(
        default_factory=lambda: ["example.test"],
        description="Domains we accept mail for. Mail for any other domain is refused (554 5.7.1, never relayed).",
    )
    maildir_root: str = Field(
        "var/mail", description="Root of the mailboxes: DOMAIN/LOCALPART/ is each mailbox's Maildir."
    )
    spool_dir: str = Field("var/spool", description="Temporary files for large messages while they arrive.")
    recipient_delimiter: str = Field(
        "+",
        max_length=1,
        description='Sub-address separator: bob+news@example.test is delivered to bob@example.test. "" turns it off.',
    )
    postmaster: str = Field(
        "",
        description="Mailbox that receives postmaster@ of every local domain (RFC 5321 4.5.1), unless a "
        'mailbox postmaster@DOMAIN exists. "" = none.',
    )
    demo_mailbox: str = Field(
        "",
        description="Mailbox created on first start when the store has none, with a random password shown once "
        '(the config `make run` writes has demo@example.test). "" = none.',
    )
    demo_password_file: str = Field(
        "",
        description="Also keep that password in this file (mode 0600), so `mailwarden demo` can fetch the demo "
        'mail by POP3. "" = only shown.',
    )

    @field_validator("domains")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [value.strip().lower().rstrip(".") for value in values]


class StoreConfig(_Section):
    url: str = Field(
        "sqlite:///var/mailwarden.db",
        description="Event and mailbox store: sqlite:///relative/path or sqlite:////absolute/path (one machine), "
        "or postgresql://user:password@host:port/database, shared by several nodes (docs/architecture.md).",
    )
    batch_interval: float = Field(
        0.05, gt=0, le=5, description="Seconds the event writer waits to gather a batch before committing."
    )
    retention_days: int = Field(90, ge=1, description="Events older than this are purged.")
    spool_dir: str = Field(
        "var/event-spool",
        description="PostgreSQL store: where this node keeps the events the database cannot take while it is "
        "away (fsynced; replayed in order, each batch once, when it is back).",
    )
    spool_max_mb: int = Field(
        1024,
        ge=1,
        description="PostgreSQL store: the most the event spool may hold; when it is full, transactions get a "
        "temporary failure instead of an accept without evidence.",
    )
    purge_interval: float = Field(
        3600.0, gt=0, description="Seconds between two purges of expired events while `mailwarden serve` runs."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://")):
            raise ValueError("use sqlite:///relative/path, sqlite:////absolute/path or postgresql://...")
        return value


class DnsConfig(_Section):
    nameservers: list[str] = Field(
        default_factory=list,
        description='Resolvers as "host:port" (port 53 if omitted). Empty: the system resolver. '
        "Use a local caching resolver; DNSBLs refuse public ones.",
    )
    timeout: float = Field(
        2.0, gt=0, le=30, description="Seconds per DNS query before it counts as a temporary failure."
    )
    max_concurrency: int = Field(256, ge=1, description="DNS queries on the wire at once; more wait their turn.")
    cache_size: int = Field(
        100_000, ge=0, description="Answers kept in the in-process cache (by their TTL). 0 turns the cache off."
    )
    negative_ttl: float = Field(
        60.0,
        ge=0,
        description='Seconds a "no such name" or "no such record" answer is cached (DNSBL misses are most lookups).',
    )
    max_ttl: float = Field(86_400.0, gt=0, description="Longest time in seconds an answer is cached, whatever its TTL.")
    fail_open: bool = Field(
        False,
        description="When a check's DNS lookup fails temporarily: false answers 4xx (the sender retries); true "
        "lets the mail pass that check, logged as a warning and recorded in the event.",
    )

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_hostport(value, default_port=53)
        return values


FindingAction = Literal["reject", "tempfail", "score", "off"]
_ACTIONS_TEXT = (
    '"reject" (the catalog\'s 5xx), "tempfail" (its 4xx twin, e.g. 450 4.7.25), "score" (adds points '
    'towards `checks.reject_score`) or "off"'
)


@dataclass(frozen=True)
class FindingPolicy:
    """A finding's configured action with its points (the options `X` and `X_score` together)."""

    action: FindingAction
    score: float


def _networks(values: list[str]) -> list[str]:
    for value in values:
        ipaddress.ip_network(value, strict=False)
    return values


def answer_range(key: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    first, _, last = key.partition("-")
    low = ipaddress.IPv4Address(first.strip())
    high = ipaddress.IPv4Address(last.strip()) if last else low
    if high < low:
        raise ValueError(f"{key!r}: the range ends before it starts")
    return low, high


class DnsblCode(_Section):
    meaning: str = Field(description='What the answer means, shown in the reply ("a dynamic address range").')
    remedy: str = Field("", description="What the sender's administrator should do; empty: the zone's remedy.")
    weight: float | None = Field(None, description="Weight of this answer; empty: the zone's weight.")
    action: FindingAction | None = Field(None, description="Action for this answer; empty: the zone's action.")


class DnsblZone(_Section):
    zone: str = Field(description="DNS zone of the list, e.g. zen.spamhaus.org (Spamhaus meanings are built in).")
    kind: Literal["block", "allow"] = Field(
        "block", description='"block": a listing counts against the client; "allow" (a DNSWL): a listing exempts it.'
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description='Ask these servers ("host:port") for this zone, e.g. a local rbldnsd mirror; empty: `dns.nameservers`.',
    )
    meanings: Literal["", "spamhaus-zen"] = Field(
        "",
        description='Built-in answer meanings: "spamhaus-zen" (SBL, CSS, XBL, DROP, PBL); automatic for '
        "zen.spamhaus.org and *.zen.dq.spamhaus.net.",
    )
    weight: float = Field(1.0, description="Weight of a listing (postscreen's dnsbl_sites *N).")
    action: FindingAction | None = Field(None, description="Action for a listing; empty: `dnsbl.action`.")
    meaning: str = Field("a listed address", description="Meaning of an answer not in `codes`.")
    remedy: str = Field(
        "find and fix the cause of the listing, then ask the list's operator to remove the address.",
        description="Remedy for an answer without its own.",
    )
    codes: dict[str, DnsblCode] = Field(
        default_factory=dict,
        description='Answers ("127.0.0.2" or a range "127.0.0.4-127.0.0.7") with their meaning, remedy, weight, action.',
    )

    @field_validator("codes")
    @classmethod
    def _codes(cls, values: dict[str, DnsblCode]) -> dict[str, DnsblCode]:
        for key in values:
            answer_range(key)
        return values

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_hostport(value, default_port=53)
        return values


class DnsblConfig(_Section):
    zones: list[DnsblZone] = Field(default_factory=list, description="Blocklists to query for each client address.")
    threshold: float = Field(
        1.0,
        gt=0,
        description="The client is refused when the weights of its listings add up to this (postscreen's "
        'dnsbl_threshold); listings with action "score" add their weight as points instead.',
    )
    action: FindingAction = Field("reject", description=f"Default action for a listing: {_ACTIONS_TEXT}.")


class RdnsConfig(_Section):
    no_rdns: FindingAction = Field("reject", description=f"The client address has no PTR record: {_ACTIONS_TEXT}.")
    no_rdns_score: float = Field(5.0, ge=0, description='Points for no PTR record when its action is "score".')
    fcrdns_mismatch: FindingAction = Field(
        "reject", description=f"No PTR name of the client resolves back to its address: {_ACTIONS_TEXT}."
    )
    fcrdns_mismatch_score: float = Field(5.0, ge=0, description='Points for an FCrDNS mismatch ("score").')
    dynamic: FindingAction = Field(
        "score", description=f"The client's name looks generic (dynamic or end-user address): {_ACTIONS_TEXT}."
    )
    dynamic_score: float = Field(5.0, ge=0, description='Points for a generic hostname ("score").')
    generic_keywords: list[str] = Field(
        default_factory=lambda: [
            "dyn", "dynamic", "dsl", "adsl", "vdsl", "xdsl", "dip", "dialup", "dial", "pool", "dhcp",
            "ppp", "pppoe", "cable", "cust", "customer", "broadband", "ftth", "unassigned",
        ],
        description="Words (whole runs of letters, outside the last two labels) that mark a generic hostname.",
    )  # fmt: skip
    generic_patterns: list[str] = Field(
        default_factory=list,
        description="More regular expressions (searched in the lower-case name) that mark a generic hostname.",
    )
    exempt_networks: list[str] = Field(default_factory=list, description="Clients exempt from these checks.")

    @field_validator("generic_patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            re.compile(value)
        return values

    _exempt = field_validator("exempt_networks")(_networks)


class HeloConfig(_Section):
    action: FindingAction = Field("reject", description=f"An invalid HELO/EHLO name: {_ACTIONS_TEXT}.")
    score: float = Field(5.0, ge=0, description='Points for an invalid HELO name ("score").')
    exempt_networks: list[str] = Field(default_factory=list, description="Clients exempt from this check.")

    _exempt = field_validator("exempt_networks")(_networks)


class SpfConfig(_Section):
    fail: Literal["reject", "score", "tag"] = Field(
        "reject",
        description='SPF fail: "reject" (550 5.7.23), "score" (points towards `checks.reject_score`) or "tag" '
        "(only the Authentication-Results header).",
    )
    fail_score: float = Field(5.0, ge=0, description='Points for an SPF fail ("score").')
    permerror: Literal["reject", "tag"] = Field(
        "tag", description='An invalid SPF record: "reject" (550 5.7.24) or "tag" (only the header).'
    )


class GreylistConfig(_Section):
    delay: int = Field(300, ge=1, description="Seconds a new (network, sender, recipient) triplet must wait.")
    retry_window: int = Field(
        172_800, ge=60, description="Seconds after the first attempt within which a retry counts; later starts over."
    )
    expire_days: int = Field(35, ge=1, description="Days a passed triplet stays known without new mail.")
    ipv4_prefix: int = Field(24, ge=8, le=32, description="Client IPv4 addresses are grouped by this prefix.")
    ipv6_prefix: int = Field(64, ge=16, le=128, description="Client IPv6 addresses are grouped by this prefix.")
    exempt_networks: list[str] = Field(default_factory=list, description="Clients never greylisted.")
    exempt_allowlisted: bool = Field(True, description="Clients on an allowlist zone (DNSWL) are not greylisted.")
    exempt_known_senders: bool = Field(
        True, description="A sender that passed greylisting from a client network before is not delayed again."
    )

    _exempt = field_validator("exempt_networks")(_networks)


class PregreetConfig(_Section):
    wait: float = Field(
        6.0,
        ge=0,
        le=60,
        description="Seconds a client not seen before waits for our greeting while we watch whether it talks "
        "first (Postfix's postscreen_greet_wait, also 6). A client that sends before the greeting is refused "
        "(550 5.5.1 client.pregreet) at RCPT. 0 = off.",
    )
    pass_ttl: float = Field(
        86_400.0,
        gt=0,
        description="Seconds a client that waited is greeted at once (postscreen_greet_ttl: a day). Kept in the "
        "store, so restarts keep it.",
    )
    exempt_networks: list[str] = Field(default_factory=list, description="Clients greeted at once, never watched.")

    _exempt = field_validator("exempt_networks")(_networks)


class RateLimitConfig(_Section):
    connections_per_minute: int = Field(
        60, ge=0, description="New connections per client address per minute; more get 421 4.7.0. 0 = no limit."
    )
    messages_per_minute: int = Field(
        120, ge=0, description="Messages (MAIL commands) per client address per minute; more get 451 4.7.0. 0 = none."
    )
    exempt_networks: list[str] = Field(default_factory=list, description="Clients without limits.")

    _exempt = field_validator("exempt_networks")(_networks)


class ClamdConfig(_Section):
    address: str = Field("", description='clamd as "host:port" or a unix socket path. "" = no virus scanning.')
    timeout: float = Field(
        30.0, gt=0, description="Seconds for one scan (connect, stream, answer); slower gives 451 4.3.0."
    )
    max_stream: int = Field(
        26_214_400,
        ge=1024,
        description="clamd's StreamMaxLength in bytes (keep them equal). Longer messages are not sent to clamd; "
        "`oversize` decides what happens to them.",
    )
    oversize: Literal["tempfail", "accept"] = Field(
        "tempfail",
        description='A message longer than `max_stream`: "tempfail" (451 4.3.0) or "accept" it unscanned (logged, '
        "and noted in the data event).",
    )
    fail_open: bool = Field(
        False,
        description="Accept mail unscanned while clamd is unreachable (logged as an error for every message). "
        "Default: answer 451 4.3.0 so the sender retries.",
    )
    pool_size: int = Field(16, ge=0, le=256, description="Idle clamd sessions (IDSESSION) kept open for reuse.")


class SpamConfig(_Section):
    engine: Literal["rspamd", "spamassassin"] = Field("rspamd", description="Which spam scanner to ask.")
    address: str = Field("", description='The scanner as "host:port" (or a unix socket path). "" = no spam scoring.')
    timeout: float = Field(20.0, gt=0, description="Seconds for one scan; slower gives 451 4.3.0.")
    reject_score: float = Field(
        15.0, description="Refuse (550 5.7.1 msg.spam) at or above this score, unless the mailbox turned refusing off."
    )
    tag_score: float = Field(
        6.0, description="At or above this score: X-Spam-* headers and delivery into the mailbox's Junk folder."
    )
    max_size: int = Field(
        10_485_760, ge=0, description="Messages larger than this many bytes are not scored (noted in the data event)."
    )
    fail_open: bool = Field(
        False, description="Accept mail unscored while the scanner is unreachable (logged). Default: 451 4.3.0."
    )
    pool_size: int = Field(16, ge=0, le=256, description="Idle keep-alive connections kept open to rspamd.")


class ContentConfig(_Section):
    macros: Literal["reject", "tag", "off"] = Field(
        "reject",
        description='Office documents with suspicious auto-running macros: "reject" (554 5.7.1 msg.macro), '
        '"tag" (header and Junk folder) or "off". A mailbox may override it (setting `macros`).',
    )
    dangerous_attachments: bool = Field(
        True, description="Refuse attachments that run code (by extension and content, also inside ZIP archives)."
    )
    dangerous_extensions: list[str] = Field(
        default_factory=lambda: sorted(DANGEROUS_EXTENSIONS),
        description="File name extensions refused as dangerous attachments (lower case, without the dot).",
    )
    workers: int = Field(2, ge=1, le=64, description="Worker processes that parse MIME, archives and Office files.")
    worker_memory_mb: int = Field(1024, ge=128, description="Address-space limit of one worker process in MiB.")
    timeout: float = Field(30.0, gt=0, description="Seconds a worker may spend on one message; beyond it 451 4.3.0.")
    max_mime_depth: int = Field(20, ge=2, le=200, description="MIME nesting levels; deeper messages are refused.")
    max_mime_parts: int = Field(1000, ge=10, description="MIME parts per message; more are refused.")
    archive_depth: int = Field(
        3,
        ge=1,
        le=10,
        description="Levels of ZIP archives opened: 1 = only the attached ones, 2 = also those in them, …",
    )
    archive_members: int = Field(1000, ge=1, description="Files opened per ZIP archive (the names of all are checked).")
    archive_total_mb: int = Field(
        256,
        ge=1,
        description="MiB decompressed for one message at most (zip bomb bound). Archives and Office documents inside "
        "archives are unpacked whole, other files only as far as their magic bytes (64 KiB).",
    )
    incomplete_archives: Literal["reject", "tag"] = Field(
        "reject",
        description="An archive that cannot be inspected completely (`archive_total_mb` used up, more than "
        "`archive_members` files, nested deeper than `archive_depth`, an archive inside unpacking to over 64 MiB): "
        '"reject" (554 5.6.0 msg.uninspectable: a message we cannot check is not accepted as clean) or "tag" '
        "(accepted with an X-Mailwarden-Warning header). What was left out is recorded in the data event either way.",
    )

    @field_validator("dangerous_extensions")
    @classmethod
    def _extensions(cls, values: list[str]) -> list[str]:
        return [value.strip().lower().lstrip(".") for value in values]


class AuthConfig(_Section):
    dkim: bool = Field(True, description="Verify DKIM signatures (the results go into Authentication-Results).")
    dmarc: bool = Field(True, description="Evaluate the From domain's DMARC policy (needs the `spf` check for SPF).")
    dmarc_reject: bool = Field(
        True,
        description="Refuse (550 5.7.1 msg.dmarc_reject) mail that fails DMARC when the domain publishes p=reject. "
        "Only a complete evaluation counts: with SPF not checked or a DKIM signature unverifiable, it only tags.",
    )
    dmarc_quarantine: bool = Field(
        True, description="Deliver mail that fails DMARC under p=quarantine into the mailbox's Junk folder."
    )
    max_size: int = Field(
        10_485_760,
        ge=0,
        description="Messages larger than this many bytes are not DKIM-verified (noted; DMARC then only tags): "
        "verification needs the whole message in memory.",
    )
    timeout: float = Field(15.0, gt=0, description="Seconds for DKIM and DMARC together (key and policy lookups).")


class ScanConfig(_Section):
    clamd: ClamdConfig = Field(default_factory=ClamdConfig, description="ClamAV's clamd.")
    spam: SpamConfig = Field(default_factory=SpamConfig, description="Spam scoring.")
    content: ContentConfig = Field(default_factory=ContentConfig, description="Attachments and Office macros.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="DKIM and DMARC.")
    budget: float = Field(
        60.0,
        gt=0,
        le=540,
        description="Seconds for all content checks of one message together (they run concurrently, each with "
        "its own timeout); beyond it 451 4.3.0. RFC 5321 gives the sender 10 minutes.",
    )


class TlsConfig(_Section):
    cert: str = Field("var/tls/cert.pem", description="PEM certificate for STARTTLS; created self-signed when missing.")
    key: str = Field("var/tls/key.pem", description="PEM private key for STARTTLS; created when missing.")
    enabled: bool = Field(True, description="Offer STARTTLS.")


class DeliveryConfig(_Section):
    mode: Literal["maildir", "lmtp", "smtp"] = Field(
        "maildir",
        description='Where accepted mail goes: "maildir" = our own Maildirs under `mail.maildir_root`; '
        '"lmtp" or "smtp" = proxy mode: handed to `downstream` (Dovecot\'s LMTP, another MTA) during the '
        "SMTP session, and the sender gets 250 only after the downstream accepted it (no local queue).",
    )
    downstream: str = Field(
        "",
        description='Proxy mode: the downstream server as "host:port" or a unix socket path '
        '(e.g. "/run/dovecot/lmtp"). Required unless `mode` is "maildir".',
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to connect to the downstream and get its greeting; slower gives 451 4.4.1."
    )
    timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds to wait for each downstream reply (the one after the message included); "
        "slower gives 451 4.4.1 (infra.downstream).",
    )

    @model_validator(mode="after")
    def _needs_downstream(self) -> DeliveryConfig:
        if self.mode != "maildir" and not self.downstream:
            raise ValueError(f'mode "{self.mode}" needs `downstream` (e.g. "127.0.0.1:24" or "/run/dovecot/lmtp")')
        if self.downstream and not self.downstream.startswith("/"):
            parse_hostport(self.downstream)
        return self


class Pop3Config(_Section):
    listen: list[str] = Field(default_factory=list, description='POP3 addresses as "host:port". Empty: no POP3 server.')
    allow_plaintext_auth: bool = Field(
        False, description="Allow USER/PASS and AUTH PLAIN without STLS (tests, trusted networks only)."
    )
    timeout: float = Field(
        600.0, gt=0, description="Seconds a logged-in client may stay silent (RFC 1939: at least 10 minutes)."
    )
    login_timeout: float = Field(60.0, gt=0, description="Seconds a client may stay silent before it has logged in.")
    max_connections: int = Field(
        200, ge=1, description="Simultaneous POP3 connections in total; more get -ERR [SYS/TEMP]."
    )
    max_connections_per_ip: int = Field(
        20, ge=1, description="Simultaneous POP3 connections from one client address; more get -ERR [SYS/TEMP]."
    )
    max_command_line: int = Field(
        255, ge=64, description="Longest command line in octets incl. CRLF (RFC 2449: 255); longer gets -ERR."
    )
    max_errors: int = Field(10, ge=1, description="Erroneous commands in one connection before it is closed.")
    auth_failure_delay: float = Field(
        1.0, ge=0, description="Seconds before answering a failed login; doubles with each further failure."
    )
    auth_failure_delay_max: float = Field(16.0, ge=0, description="Upper bound of that delay in seconds.")
    auth_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins from one address or for one user name within `auth_lock_seconds` that lock "
        "it: further logins get -ERR [AUTH] until the lock expires.",
    )
    auth_lock_seconds: float = Field(
        900.0, gt=0, description="How long such a lock lasts, and the window in which failures are counted."
    )

    _listen = field_validator("listen")(_check_listen)


def _check_socket_listen(values: list[str]) -> list[str]:
    for value in values:
        if not value.startswith("unix:"):
            parse_hostport(value)
        elif not value.removeprefix("unix:"):
            raise ValueError(f"{value!r}: give the socket's path, as in unix:/run/mailwarden/milter.sock")
    return values


def _check_mode(value: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f"{value!r}: give an octal file mode, as in 0660")
    return value


class MilterConfig(_Section):
    listen: list[str] = Field(
        default_factory=list,
        description='Addresses for Postfix\'s milter connections (`smtpd_milters`), as "host:port" or '
        '"unix:PATH" (relative paths are relative to this file). Empty: no milter. docs/postfix.md has the '
        "Postfix side.",
    )
    socket_mode: str = Field(
        "0660",
        description="File mode of a unix socket in `listen`: Postfix's smtpd (user postfix) must be able to "
        "write to it, so put it in a group of postfix's or widen this.",
    )
    timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds Postfix may stay silent on a milter connection before we close it; keep it above "
        "Postfix's smtpd_timeout (300 s), which bounds how long its client may think.",
    )
    max_packet: int = Field(
        1_048_576,
        ge=65_536,
        description="Largest milter packet in bytes (a header field; a body chunk is at most 64 KiB); a bigger "
        "one closes the connection, and Postfix applies milter_default_action. Keep it above Postfix's "
        "header_size_limit (100 KiB).",
    )
    max_macros: int = Field(
        65_536,
        ge=1024,
        description="Largest packet of macros in bytes; a bigger one closes the connection as above.",
    )

    _listen = field_validator("listen")(_check_socket_listen)
    _mode = field_validator("socket_mode")(_check_mode)


class PolicyConfig(_Section):
    listen: list[str] = Field(
        default_factory=list,
        description='Addresses for Postfix\'s policy delegation (`check_policy_service`), as "host:port" or '
        '"unix:PATH". Empty: no policy service. docs/postfix.md has the Postfix side.',
    )
    socket_mode: str = Field("0660", description="File mode of a unix socket in `listen` (see `milter.socket_mode`).")
    timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a policy connection may stay silent before we close it; keep it above Postfix's "
        "smtpd_policy_service_max_idle (300 s), after which Postfix closes it itself.",
    )
    max_request: int = Field(
        65_536, ge=4096, description="Largest request in bytes; a bigger one closes the connection."
    )

    _listen = field_validator("listen")(_check_socket_listen)
    _mode = field_validator("socket_mode")(_check_mode)


class WebConfig(_Section):
    listen: str = Field(
        "",
        description='Tracking center (pages, JSON API, public /why/REF) as "host:port", started by `mailwarden '
        'serve` (or alone by `mailwarden web`). "" = no web server.',
    )
    first_admin: str = Field(
        "",
        description="Admin account created when the web server starts and the store has no web account yet; its "
        'password is printed once. "" = none (create accounts with `mailwarden accounts add`).',
    )
    cert: str = Field(
        "", description='TLS certificate (PEM) for serving HTTPS directly. "" = plain HTTP (e.g. behind a proxy).'
    )
    key: str = Field("", description="Private key (PEM) of `cert`.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed "
        "(the client address for rate limits and the audit log; https makes session cookies Secure).",
    )
    session_idle_minutes: int = Field(60, ge=1, description="A login session ends after this long without a request.")
    session_max_hours: int = Field(12, ge=1, description="A login session ends this long after the login, in any case.")
    login_failure_delay: float = Field(
        1.0, ge=0, description="Seconds before answering a failed login; doubles with each further failure."
    )
    login_failure_delay_max: float = Field(16.0, ge=0, description="Upper bound of that delay in seconds.")
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins from one address or for one account within `login_lock_seconds` that lock it: "
        "further logins are refused, even with the right password, until the lock expires.",
    )
    login_lock_seconds: float = Field(
        900.0, gt=0, description="How long such a lock lasts, and the window in which failures are counted."
    )
    why_per_minute: int = Field(
        30, ge=1, description="Requests per minute one client address may make to the public /why/REF page."
    )
    workers: int = Field(
        0,
        ge=0,
        description="Processes of `mailwarden web` that serve the pages on one port, a listening socket each (the "
        "kernel spreads the connections over them); they share sessions, login "
        "locks, the /why limit and the login form's key through the store. 0 = one per CPU core; 1 = no worker "
        "processes. `mailwarden serve` serves the web pages in its own process, whatever this says.",
    )

    _listen = field_validator("listen")(_check_optional_listen)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value, strict=False)
        return values

    @model_validator(mode="after")
    def _key_pair(self) -> WebConfig:
        if bool(self.cert) != bool(self.key):
            raise ValueError("set both `web.cert` and `web.key` to serve HTTPS, or neither")
        return self


class ExplainConfig(_Section):
    url: str = Field(
        "", description='Public explanation page; the ref is appended and shown in every refusal. "" = none.'
    )


# Every check in the order the derived `[checks] order` lists them (each stage runs its own in this order).
CHECK_SEQUENCE: Final = (
    "ratelimit", "pregreet", "dnsbl", "rdns", "helo", "size", "sender_domain", "spf", "recipients", "greylist",
    "content",
)  # fmt: skip
# The check each section configures: a configured section is used, its check may not be left out.
SECTION_CHECKS: Final = {
    "ratelimit": "ratelimit", "pregreet": "pregreet", "dnsbl": "dnsbl", "rdns": "rdns", "helo": "helo",
    "spf": "spf", "greylist": "greylist", "scan": "content",
}  # fmt: skip
# In the derived order only when their section is configured (the rest need nothing or only DNS).
OPT_IN_CHECKS: Final = frozenset({"ratelimit", "dnsbl", "greylist"})


def _with_checks(order: list[str], missing: list[str]) -> list[str]:
    """`order` with `missing` inserted where the derived order has them, for the fix an error names."""
    result = list(order)
    for check in missing:
        later = CHECK_SEQUENCE[CHECK_SEQUENCE.index(check) + 1 :]
        result.insert(next((i for i, name in enumerate(result) if name in later), len(result)), check)
    return result


class ChecksConfig(_Section):
    order: list[str] | None = Field(
        None,
        description="Checks to run, in this order, at each SMTP stage they act on. Not set: every check whose "
        "prerequisites are configured, i.e. pregreet, rdns, helo, size, sender_domain, spf, recipients and "
        "content, plus dnsbl, ratelimit and greylist when their sections are there (`mailwarden config check` "
        "prints the result). A configured section whose check is left out of the order is an error.",
    )
    timeout: float = Field(
        30.0, gt=0, description="Seconds one check may take; a slower check gives 451 4.3.0, never an accept."
    )
    reject_score: float = Field(
        10.0,
        gt=0,
        description='Findings configured as action "score" add up (per connection plus per message); at this '
        "total the finding that reached it is refused with its own reply.",
    )


IngestFormat = Literal["auto", "postfix", "dovecot", "exim", "rspamd", "amavis", "clamav-milter"]
INGEST_FORMATS: tuple[str, ...] = get_args(IngestFormat)
SyslogTransport = Literal["udp", "tcp"]
SYSLOG_TRANSPORTS: tuple[SyslogTransport, ...] = ("udp", "tcp")


class IngestConfig(_Section):
    files: list[str] = Field(
        default_factory=list,
        description="Log files `mailwarden serve` follows like `tail -F` (rotation and truncation are noticed; "
        "the reading position is kept in the store, so a restart neither repeats nor skips lines). "
        "Empty: no files are followed.",
    )
    syslog_listen: list[str] = Field(
        default_factory=list,
        description='Addresses ("host:port") on which `mailwarden serve` receives syslog messages (RFC 5424 and '
        "RFC 3164) from rsyslog or syslog-ng, on UDP and TCP (octet-counted or newline-separated). "
        "Empty: no receiver.",
    )
    syslog_protocols: list[SyslogTransport] = Field(
        default_factory=lambda: list(SYSLOG_TRANSPORTS), description="Transports the syslog receiver listens on."
    )
    format: IngestFormat = Field(
        "auto",
        description='Log format of the followed files and received messages: "auto" picks the parser per line '
        "by its program name (postfix/..., dovecot, exim, rspamd, amavis, clamav-milter).",
    )
    node: str = Field(
        "",
        description="Node name for lines that carry no host field (Dovecot's and Exim's own log files). "
        '"" = the [node] name.',
    )
    timezone: str = Field(
        "",
        description="Time zone of log stamps written without an offset (classic syslog, Exim's and Dovecot's "
        'files), as an IANA name like "Europe/Berlin" or "UTC". "" = the zone `date` uses: $TZ when set, '
        "else the system's zone.",
    )
    holdback: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Seconds (of log time) an event waits for the lines that complete it, so that lines "
        "written out of order by different processes still join one message.",
    )
    warmup_bytes: int = Field(
        16_777_216,
        ge=0,
        description="On resuming a followed file, this many bytes before the saved position are read again "
        "(without storing events) to rebuild sessions and queue files that span the restart.",
    )
    max_line: int = Field(
        65_536, ge=1024, description="Longest log line or syslog message in bytes; longer ones are cut to this."
    )

    _listen = field_validator("syslog_listen")(_check_listen)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value:
            from mailwarden.ingest.timestamps import local_zone

            local_zone(value)
        return value


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Daemon log level (stderr).")


class MetricsConfig(_Section):
    listen: str = Field(
        "",
        description='Prometheus /metrics and the /health check of this node as "host:port" (plain HTTP, no login: '
        "keep it on loopback or a monitoring network), served by `mailwarden serve` for all its SMTP workers. "
        '"" = none (the default: no port opens unasked; the conventional choice is "127.0.0.1:9187").',
    )
    stuck_after: float = Field(
        30.0,
        gt=0,
        description="/health answers 503 when the oldest event not yet committed to the store has waited this many "
        "seconds (the event writer is stuck).",
    )

    _listen = field_validator("listen")(_check_optional_listen)


class Config(_Section):
    node: NodeConfig = Field(default_factory=NodeConfig, description="This node.")
    smtp: SmtpConfig = Field(default_factory=SmtpConfig, description="The SMTP gateway (our MX).")
    mail: MailConfig = Field(default_factory=MailConfig, description="Local domains and mailboxes.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Where events and mailboxes live.")
    dns: DnsConfig = Field(default_factory=DnsConfig, description="DNS resolution for the checks.")
    dnsbl: DnsblConfig = Field(default_factory=DnsblConfig, description="DNS block- and allowlists.")
    rdns: RdnsConfig = Field(default_factory=RdnsConfig, description="Reverse DNS of the client (check `rdns`).")
    helo: HeloConfig = Field(default_factory=HeloConfig, description="The HELO/EHLO name (check `helo`).")
    spf: SpfConfig = Field(default_factory=SpfConfig, description="SPF of the envelope sender (check `spf`).")
    pregreet: PregreetConfig = Field(
        default_factory=PregreetConfig, description="Clients that talk before our greeting (check `pregreet`)."
    )
    greylist: GreylistConfig = Field(default_factory=GreylistConfig, description="Greylisting (check `greylist`).")
    ratelimit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Connection and message rates (check `ratelimit`)."
    )
    scan: ScanConfig = Field(default_factory=ScanConfig, description="Content scanners.")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="STARTTLS.")
    delivery: DeliveryConfig = Field(
        default_factory=DeliveryConfig, description="Local Maildir delivery or proxy mode (LMTP/SMTP downstream)."
    )
    pop3: Pop3Config = Field(default_factory=Pop3Config, description="The POP3 server.")
    milter: MilterConfig = Field(
        default_factory=MilterConfig, description="The checks as a milter inside Postfix (docs/postfix.md)."
    )
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description="The envelope checks as Postfix's policy delegation service (docs/postfix.md).",
    )
    web: WebConfig = Field(default_factory=WebConfig, description="The web tracking center.")
    explain: ExplainConfig = Field(default_factory=ExplainConfig, description="Public explanations of refusals.")
    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="The decision chain.")
    log: LogConfig = Field(default_factory=LogConfig, description="Daemon logging.")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics and the health check (docs/deployment.md)."
    )
    ingest: IngestConfig = Field(
        default_factory=IngestConfig, description="Reading the logs of other mail systems (Postfix, Dovecot, ...)."
    )

    # Where relative paths are anchored; not a TOML key.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True, description="")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.mail.postmaster and self.mail.postmaster.rpartition("@")[2].lower() not in self.mail.domains:
            raise ValueError(f"mail.postmaster {self.mail.postmaster!r} is not in one of mail.domains")
        order = self.checks.order
        unused = [] if order is None else [s for s in self._configured_sections() if SECTION_CHECKS[s] not in order]
        if order is not None and unused:
            found = "; ".join(f'[{s}] is configured, but "{SECTION_CHECKS[s]}" is not in it' for s in unused)
            fixed = _with_checks(order, [SECTION_CHECKS[s] for s in unused])
            raise ValueError(
                f"key `checks.order`: {found}, so a configured check would never run. "
                f"Fix: order = {_toml(fixed)}, or remove the section"
            )
        return self

    def _configured_sections(self) -> list[str]:
        return [section for section in SECTION_CHECKS if section in self.model_fields_set]

    @property
    def check_order(self) -> list[str]:
        """`[checks] order` as given; else every check whose prerequisites are configured (what is configured runs)."""
        if self.checks.order is not None:
            return list(self.checks.order)
        configured = {SECTION_CHECKS[section] for section in self._configured_sections()}
        return [check for check in CHECK_SEQUENCE if check not in OPT_IN_CHECKS or check in configured]

    def path(self, value: str) -> Path:
        """Resolve a configured path against the config file's directory."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path


def _key_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _known_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        if name == "base_dir":
            continue
        key = f"{prefix}{name}"
        yield key
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _known_keys(annotation, key + ".")


def _explain(error: ValidationError) -> str:
    known = list(_known_keys(Config))
    lines = []
    for item in error.errors():
        key = _key_of(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            near = difflib.get_close_matches(key, known, n=1)
            fix = f"did you mean `{near[0]}`?" if near else "remove it; docs/configuration.md lists every key"
            lines.append(f"key `{key}`: unknown key. Fix: {fix}")
            continue
        problem = item["msg"].removeprefix("Value error, ")
        if not key and problem.startswith("key `"):  # a check across sections: it names its key and fix
            lines.append(problem)
            continue
        lines.append(
            f"key `{key or '(top level)'}`: {problem} (got {item.get('input')!r}). "
            "Fix: set an allowed value; docs/configuration.md documents it with its default."
        )
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config from `path`, $MAILWARDEN_CONFIG, or the built-in defaults."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        return Config()
    file = Path(chosen)
    try:
        with file.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist; create it or leave out -c to use the defaults") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}. Fix the syntax at that position.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        return Config(**data, base_dir=file.resolve().parent)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_explain(exc)}") from None


STARTER_PORT: Final = 2525


def starter(smtp_port: int = STARTER_PORT) -> str:
    """The config `make run` writes on its first start: everything on loopback, works offline, says why."""
    return f"""\
# mailwarden on this machine, written by `make run` on its first start (`mailwarden config init`)
# and used from then on: edit it and restart. Every option, with its default, is in
# docs/configuration.md. Relative paths are relative to this file's directory.

[node]
name = "local"

[smtp]
listen = ["127.0.0.1:{smtp_port}"]
hostname = "mx.example.test"

[mail]
domains = ["example.test"]
maildir_root = "mail"
spool_dir = "spool"
demo_mailbox = "demo@example.test"          # created on first start, its password printed once
demo_password_file = "demo-password"        # and kept here, for `mailwarden demo`'s POP3 fetch
postmaster = "demo@example.test"            # postmaster@example.test (RFC 5321 4.5.1) goes there too

[store]
url = "sqlite:///mailwarden.db"

[tls]
cert = "tls/cert.pem"                       # both created self-signed on first start
key = "tls/key.pem"

[pop3]
listen = ["127.0.0.1:{smtp_port + 1}"]
allow_plaintext_auth = true                 # USER/PASS without STLS: it listens on loopback only

[web]
listen = "127.0.0.1:{smtp_port + 2}"             # the tracking center: http://127.0.0.1:{smtp_port + 2}/
first_admin = "admin"                       # created on first start, its password printed once

[checks]
# This config works offline, so the checks that need DNS are left out: rdns, helo, sender_domain,
# spf, and dnsbl (which also needs [[dnsbl.zones]]); DKIM and DMARC are off below for the same
# reason. With a resolver in [dns] nameservers, delete this order and the [scan.auth] section:
# then every check whose prerequisites are configured runs (`mailwarden config check` lists them).
order = ["pregreet", "size", "recipients", "content"]

[pregreet]
wait = 6.0                                  # a client not seen for a day waits this long for our greeting

[scan.auth]
dkim = false
dmarc = false
"""


def docs_markdown() -> str:
    """docs/configuration.md: every option with its type, default and meaning."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `src/mailwarden/config.py` by `mailwarden config docs`; a test fails when the two differ.",
        "",
        "mailwarden reads one TOML file, given with `-c FILE` or `$MAILWARDEN_CONFIG`; without one it runs on",
        "these defaults. Relative paths are resolved against the config file's directory. `mailwarden config",
        "check` validates a file and names the key, the problem and the fix for each error.",
        "",
    ]

    def section(model: type[BaseModel], prefix: str) -> None:
        rows = []
        nested = []
        for name, info in model.model_fields.items():
            if name == "base_dir":
                continue
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if annotation is not DnsblZone:
                    nested.append((f"{prefix}{name}", annotation, info.description or ""))
                continue
            default: Any
            if info.default_factory is not None:
                default = info.default_factory()  # type: ignore[call-arg]
                if name in ("name", "hostname"):
                    default = "(hostname of the machine)"
            else:
                default = info.default
            if default is None:
                shown = "(not set)"
            else:
                shown = default if isinstance(default, str) and default.startswith("(") else _toml(default)
            rows.append(f"| `{name}` | `{shown}` | {info.description or ''} |")
        if rows:
            out.extend([f"## [{prefix.rstrip('.')}]", "", "| key | default | meaning |", "|---|---|---|", *rows, ""])
        for key, sub, _description in nested:
            section(sub, key + ".")

    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if name == "base_dir" or not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        out.append(f"<!-- {info.description} -->")
        section(annotation, name + ".")
    for title, model in (("[[dnsbl.zones]]", DnsblZone), ('[dnsbl.zones.codes."ANSWER"]', DnsblCode)):
        out.extend([f"## {title}", "", "| key | default | meaning |", "|---|---|---|"])
        for name, info in model.model_fields.items():
            if info.is_required():
                shown = "(required)"
            else:
                value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
                shown = "(empty)" if value is None else f"`{_toml(value)}`"
            out.append(f"| `{name}` | {shown} | {info.description} |")
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)
