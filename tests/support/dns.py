"""Real DNS for tests: NSD (authoritative, real zone files) and rbldnsd (DNS lists) on free loopback ports.

`running_dns(tmp_path)` starts both with the test zones below (or the zones you pass) and stops
them on exit. Point mailwarden at them with `[dns] nameservers = [servers.nsd]` and each DNS list
zone with `nameservers = [servers.rbldnsd]`.

The gateway sees the client address of the socket, so a test picks a client by connecting
from a chosen 127.0.0.x source address (`smtplib.SMTP(..., source_address=(ip, 0))`); the
reverse zone below gives each such address its story (`CLIENTS`).

Names outside the served zones get REFUSED from NSD, which our resolver treats as a temporary
failure: that is how the zones below produce an SPF temperror and a DNS failure for a domain.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import dns.message
import dns.query
import dns.rcode

from tests.support.net import free_port

NSD: Final = shutil.which("nsd") or "/usr/sbin/nsd"
RBLDNSD: Final = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"

# Client addresses and what DNS says about them (reverse zone + lists below).
CLIENTS: Final[dict[str, str]] = {
    "clean": "127.0.0.10",  # PTR mail.good.test, which resolves back: FCrDNS ok, on no list
    "pbl": "127.0.0.11",  # listed on zen.dnsbl.test as 127.0.0.10 (Spamhaus PBL)
    "sbl": "127.0.0.12",  # listed on zen.dnsbl.test as 127.0.0.2 (Spamhaus SBL), with TXT
    "generic": "127.0.0.13",  # PTR 127-0-0-13.dyn.isp.test (forward-confirmed): a dynamic address
    "no_ptr": "127.0.0.14",  # no PTR record at all
    "fcrdns_mismatch": "127.0.0.15",  # PTR mismatch.isp.test, whose A record is 127.0.0.99
    "dnswl": "127.0.0.16",  # on zen.dnsbl.test as SBL, but also on list.dnswl.test: exempt
    "list_error": "127.0.0.17",  # zen.dnsbl.test answers 127.255.255.254: a list error, not a listing
}

# Sender domains (zone "test"): sender@<domain>.
DOMAINS: Final[dict[str, str]] = {
    "good": "good.test",  # MX mail.good.test, SPF pass for 127.0.0.0/24
    "implicit_mx": "amx.test",  # no MX, an A record (implicit MX), SPF pass
    "mx_ip_literal": "iplit.test",  # MX 10 1.2.3.4.
    "null_mx": "nullmx.test",  # MX 0 . (RFC 7505)
    "missing": "missing.test",  # no records at all (NXDOMAIN)
    "no_mail_host": "nohost.test",  # MX hosts without addresses
    "spf_fail": "spf-fail.test",  # -all, the client is not in it
    "spf_softfail": "spf-softfail.test",  # ~all
    "spf_neutral": "spf-neutral.test",  # ?all
    "spf_temperror": "spf-temperror.test",  # include: of a name the server refuses (temporary error)
    "spf_permerror": "spf-permerror.test",  # a syntax error in the record
    "dns_failure": "unserved.example",  # not served at all: every lookup fails temporarily
}

TEST_ZONE: Final = """\
$ORIGIN test.
$TTL 300
@        IN SOA ns1.test. hostmaster.test. 1 3600 600 86400 60
@        IN NS  ns1.test.
ns1      IN A   127.0.0.1
; forward records of the clients' PTR names
mail.good            IN A 127.0.0.10
mail.pbl             IN A 127.0.0.11
mail.sbl             IN A 127.0.0.12
127-0-0-13.dyn.isp   IN A 127.0.0.13
mismatch.isp         IN A 127.0.0.99
mail.dnswl           IN A 127.0.0.16
mail.listerror       IN A 127.0.0.17
; sender domains
good                 IN MX  10 mail.good.test.
good                 IN TXT "v=spf1 ip4:127.0.0.0/24 -all"
amx                  IN A   127.0.0.10
amx                  IN TXT "v=spf1 a ip4:127.0.0.0/24 -all"
iplit                IN MX  10 1.2.3.4.
nullmx               IN MX  0 .
nohost               IN MX  10 ghost.nohost.test.
nohost               IN MX  20 phantom.nohost.test.
spf-fail             IN MX  10 mail.good.test.
spf-fail             IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
spf-softfail         IN MX  10 mail.good.test.
spf-softfail         IN TXT "v=spf1 ip4:192.0.2.0/24 ~all"
spf-neutral          IN MX  10 mail.good.test.
spf-neutral          IN TXT "v=spf1 ?all"
spf-temperror        IN MX  10 mail.good.test.
spf-temperror        IN TXT "v=spf1 include:spf.unserved.example -all"
spf-permerror        IN MX  10 mail.good.test.
spf-permerror        IN TXT "v=spf1 ip4:127.0.0.0/24 frobnicate:x -all"
"""

REVERSE_ZONE: Final = """\
$ORIGIN 0.0.127.in-addr.arpa.
$TTL 300
@   IN SOA ns1.test. hostmaster.test. 1 3600 600 86400 60
@   IN NS  ns1.test.
1   IN PTR localhost.
10  IN PTR mail.good.test.
11  IN PTR mail.pbl.test.
12  IN PTR mail.sbl.test.
13  IN PTR 127-0-0-13.dyn.isp.test.
15  IN PTR mismatch.isp.test.
16  IN PTR mail.dnswl.test.
17  IN PTR mail.listerror.test.
"""

ZEN_LIST: Final = """\
:127.0.0.2:Listed on the test SBL, see https://check.spamhaus.test/sbl/query/$
127.0.0.2
127.0.0.11 :127.0.0.10:https://check.spamhaus.test/query/ip/127.0.0.11
127.0.0.12 :127.0.0.2:https://check.spamhaus.test/sbl/query/SBL12345
127.0.0.16 :127.0.0.2:https://check.spamhaus.test/sbl/query/SBL16
127.0.0.17 :127.255.255.254:Error: open resolver; see https://www.spamhaus.test/returnc/pub/
"""

DNSWL_LIST: Final = """\
127.0.0.16 :127.0.10.2:https://dnswl.test/s/?s=16
"""

TEST_ZONES: Final[dict[str, str]] = {"test": TEST_ZONE, "0.0.127.in-addr.arpa": REVERSE_ZONE}
TEST_LISTS: Final[dict[str, str]] = {"zen.dnsbl.test": ZEN_LIST, "list.dnswl.test": DNSWL_LIST}


def gateway_config(servers: DnsServers, order: list[str], **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mailwarden config sections for these servers: `checks.order`, the test lists when `dnsbl` is in it,
    generic hostnames refused when `rdns` is, plus `sections`."""
    config: dict[str, dict[str, Any]] = {
        "dns": {"nameservers": [servers.nsd], "timeout": 1.0},
        "checks": {"order": order},
    }
    if "dnsbl" in order:
        config["dnsbl"] = {"zones": test_lists(servers)}
    if "rdns" in order:
        config["rdns"] = {"dynamic": "reject"}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def test_lists(servers: DnsServers) -> list[dict[str, Any]]:
    """`[[dnsbl.zones]]` for the test lists: the Spamhaus-like blocklist and the allowlist."""
    return [
        {"zone": "zen.dnsbl.test", "meanings": "spamhaus-zen", "nameservers": [servers.rbldnsd]},
        {"zone": "list.dnswl.test", "kind": "allow", "nameservers": [servers.rbldnsd]},
    ]


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP (DNS servers answer on both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def wait_dns(port: int, name: str, rtype: str = "SOA", timeout: float = 30.0) -> None:
    """Wait until the server on `port` answers a question about `name` (NOERROR or NXDOMAIN)."""
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(name.rstrip(".") + ".", rtype)
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return
            last = dns.rcode.to_text(response.rcode())
        except (OSError, dns.exception.DNSException) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"DNS server on port {port} does not answer for {name} after {timeout}s: {last}")


@dataclass
class DnsServers:
    """The running servers; `nsd` and `rbldnsd` are "127.0.0.1:PORT" for the configs."""

    directory: Path
    nsd: str = ""
    rbldnsd: str = ""
    list_data: Path | None = None  # rbldnsd's files (outside tmp_path, see _start_rbldnsd)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def stop_server(self, name: str) -> None:
        """Stop one server ("nsd" or "rbldnsd"), e.g. to show what a DNS outage does."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_server(name)

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _start_nsd(servers: DnsServers, zones: Mapping[str, str]) -> None:
    directory = servers.directory / "nsd"
    directory.mkdir()
    port = free_udp_tcp_port()
    lines = [
        "server:",
        f"    ip-address: 127.0.0.1@{port}",
        "    do-ip6: no",
        '    username: ""',
        '    chroot: ""',
        f'    zonesdir: "{directory}"',
        '    database: ""',
        f'    pidfile: "{directory}/nsd.pid"',
        f'    xfrdfile: "{directory}/xfrd.state"',
        f'    xfrdir: "{directory}"',
        f'    zonelistfile: "{directory}/zone.list"',
        f'    logfile: "{servers.directory}/nsd.log"',
        "    verbosity: 1",
        "    server-count: 1",
        "remote-control:",
        "    control-enable: no",
    ]
    for origin, body in zones.items():
        filename = f"{origin}.zone"
        (directory / filename).write_text(body)
        lines += ["zone:", f'    name: "{origin}"', f'    zonefile: "{filename}"']
    config = directory / "nsd.conf"
    config.write_text("\n".join(lines) + "\n")
    with open(servers.directory / "nsd.out", "wb") as out:
        servers.processes["nsd"] = subprocess.Popen(
            [NSD, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    servers.nsd = f"127.0.0.1:{port}"
    try:
        wait_dns(port, next(iter(zones)))
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\n{servers.log('nsd')}{(servers.directory / 'nsd.out').read_text()}") from None


def _start_rbldnsd(servers: DnsServers, lists: Mapping[str, str]) -> None:
    # rbldnsd refuses to run as root and reads its files after dropping to `nobody`, who cannot
    # enter pytest's private tmp_path: its data goes into a world-readable dir of its own.
    data = Path(tempfile.mkdtemp(prefix="mailwarden-rbldnsd-"))
    data.chmod(0o755)
    servers.list_data = data
    port = free_udp_tcp_port()
    datasets = []
    for zone, body in lists.items():
        filename = f"{zone}.ip4set"
        (data / filename).write_text(body)
        (data / filename).chmod(0o644)
        datasets.append(f"{zone}:ip4set:{filename}")
    user = "nobody" if os.geteuid() == 0 else str(os.geteuid())
    with open(servers.directory / "rbldnsd.log", "wb") as out:
        servers.processes["rbldnsd"] = subprocess.Popen(
            [RBLDNSD, "-n", "-u", user, "-b", f"127.0.0.1/{port}", "-w", str(data), *datasets],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    servers.rbldnsd = f"127.0.0.1:{port}"
    try:
        wait_dns(port, "2.0.0.127." + next(iter(lists)), "A")  # the test point every list has
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\n{servers.log('rbldnsd')}") from None


@contextmanager
def running_dns(
    directory: Path,
    zones: Mapping[str, str] | None = None,
    lists: Mapping[str, str] | None = None,
) -> Iterator[DnsServers]:
    """NSD serving `zones` (origin -> zone file text) and rbldnsd serving `lists` (zone -> ip4set text)."""
    directory.mkdir(parents=True, exist_ok=True)
    servers = DnsServers(directory)
    try:
        _start_nsd(servers, TEST_ZONES if zones is None else zones)
        chosen_lists = TEST_LISTS if lists is None else lists
        if chosen_lists:
            _start_rbldnsd(servers, chosen_lists)
        yield servers
    finally:
        servers.stop()
        if servers.list_data is not None:
            shutil.rmtree(servers.list_data, ignore_errors=True)
