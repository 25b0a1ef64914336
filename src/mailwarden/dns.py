"""DNS for the session path: an asyncio resolver on c-ares (aiodns) with our own cache.

Why c-ares: it costs a fifth of dnspython's CPU per query, and every connection asks several
questions (PTR, forward confirmation, DNSBLs, MX, SPF). Its one socket per server drops
replies under bursts unless the receive buffer is large, hence 4 MiB.

What callers can rely on:
- an answer is definitive: records, NODATA (no records of that type) or NXDOMAIN (no such name);
- anything else - SERVFAIL, REFUSED, a timeout, no reachable server - raises `DnsTempError`,
  which a check turns into a 4xx (never a 5xx, never a silent accept);
- answers are cached for their TTL (at most `max_ttl`), NXDOMAIN and NODATA for `negative_ttl`
  (c-ares reports them as errors without the SOA, so RFC 2308's SOA minimum is not available);
  identical lookups in flight share one query;
- at most `max_concurrency` queries are on the wire at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, overload

from mailwarden.config import parse_hostport

if TYPE_CHECKING:
    import aiodns
    import pycares

    from mailwarden.config import DnsConfig

log = logging.getLogger(__name__)

RECEIVE_BUFFER: Final = 4 << 20  # c-ares shares one UDP socket per server: see the module docstring
NameType = Literal["A", "AAAA", "PTR", "NS", "CNAME"]
RecordType = Literal["A", "AAAA", "PTR", "NS", "CNAME", "MX", "TXT"]
_TYPE_CODES: Final[dict[str, int]] = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}

T = TypeVar("T")


class DnsTempError(Exception):
    """A lookup failed temporarily: the question may have a different answer later."""

    def __init__(self, name: str, rtype: str, problem: str) -> None:
        super().__init__(f"{rtype} {name}: {problem}")
        self.name = name
        self.rtype = rtype
        self.problem = problem


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str  # without the trailing dot; "" is the null MX "." (RFC 7505)


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A definitive answer: the records (empty for NODATA), or `nxdomain` for a name that does not exist."""

    name: str
    rtype: str
    records: tuple[T, ...]
    nxdomain: bool = False
    ttl: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.records)


def reverse_name(ip: str) -> str:
    """The PTR name of an address: 4.3.2.1.in-addr.arpa or the nibbles under ip6.arpa."""
    return ipaddress.ip_address(ip).reverse_pointer


def dnsbl_name(ip: str, zone: str) -> str:
    """The name to look up an address in a DNS list: reversed octets (or nibbles) under the zone."""
    pointer = ipaddress.ip_address(ip).reverse_pointer
    return pointer.rsplit(".", 2)[0] + "." + zone.strip(".")


def valid_name(name: str) -> bool:
    """Whether `name` can exist in DNS at all (length limits); other names are NXDOMAIN without asking."""
    if not name or len(name) > 253:
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


_TEMPORARY_ERRORS: Final = {"ESERVFAIL", "EREFUSED", "ETIMEOUT", "ECONNREFUSED", "EBADRESP", "ENOTIMP", "EFORMERR"}


class Resolver:
    """The shared resolver (`Services.resolver`). Cheap to build; the c-ares channel starts on first use."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 2.0,
        max_concurrency: int = 256,
        cache_size: int = 100_000,
        negative_ttl: float = 60.0,
        max_ttl: float = 86_400.0,
    ) -> None:
        self.nameservers = [_cares_server(s) for s in nameservers]
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.cache_size = cache_size
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.stats: Counter[str] = Counter()  # queries, cache_hits, shared, tempfail: for tests and bench/
        self._cache: dict[tuple[str, str], tuple[float, Answer[Any]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer[Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: aiodns.DNSResolver | None = None
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, config: DnsConfig) -> Resolver:
        return cls(
            config.nameservers,
            timeout=config.timeout,
            max_concurrency=config.max_concurrency,
            cache_size=config.cache_size,
            negative_ttl=config.negative_ttl,
            max_ttl=config.max_ttl,
        )

    def with_nameservers(self, nameservers: Sequence[str]) -> Resolver:
        """A resolver asking other servers (e.g. a local rbldnsd mirror of a DNSBL), same settings."""
        return Resolver(
            nameservers,
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
            cache_size=self.cache_size,
            negative_ttl=self.negative_ttl,
            max_ttl=self.max_ttl,
        )

    def clear_cache(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.cancel()
        self._channel = None
        self._loop = None

    # ------------------------------------------------------------------ typed lookups
    @overload
    async def query(self, name: str, rtype: Literal["MX"]) -> Answer[MX]: ...
    @overload
    async def query(self, name: str, rtype: Literal["TXT"]) -> Answer[bytes]: ...
    @overload
    async def query(self, name: str, rtype: NameType) -> Answer[str]: ...

    async def query(self, name: str, rtype: RecordType) -> Answer[Any]:
        """Records of one type for `name`; raises `DnsTempError` when there is no definitive answer."""
        key = (_normalize(name), rtype)
        if not valid_name(key[0]):
            return Answer(key[0], rtype, (), nxdomain=True)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > time.monotonic():
                self.stats["cache_hits"] += 1
                return cached[1]
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None and not pending.done():
            self.stats["shared"] += 1
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # we were cancelled ourselves
                # the task that asked was cancelled (its own deadline): ask again below
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer[Any]] = loop.create_future()
        self._inflight[key] = future
        try:
            answer = await self._ask(key[0], rtype)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: the waiters re-raise it themselves
            raise
        else:
            future.set_result(answer)
            self._remember(key, answer)
            return answer
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def ptr(self, ip: str) -> Answer[str]:
        return await self.query(reverse_name(ip), "PTR")

    async def host_addresses(self, host: str) -> list[str]:
        """A and AAAA of `host` together. A failure of one family only matters if the other found nothing."""
        results = await asyncio.gather(self.query(host, "A"), self.query(host, "AAAA"), return_exceptions=True)
        addresses: list[str] = []
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, DnsTempError):
                failure = result
            elif isinstance(result, BaseException):
                raise result
            else:
                addresses.extend(result.records)
        if not addresses and failure is not None:
            raise failure
        return addresses

    # ------------------------------------------------------------------ the wire
    def _channel_for(self, loop: asyncio.AbstractEventLoop) -> tuple[aiodns.DNSResolver, asyncio.Semaphore]:
        if self._channel is None or self._loop is not loop or self._slots is None:
            import aiodns

            kwargs: dict[str, Any] = {
                # c-ares retries once with a doubled wait (t + 2t = our timeout), so it gives up by
                # itself just before our own deadline, which only guards against surprises.
                "timeout": max(self.timeout / 3, 0.05),
                "tries": 2,
                "socket_receive_buffer_size": RECEIVE_BUFFER,
            }
            self._channel = aiodns.DNSResolver(self.nameservers or None, loop=loop, **kwargs)
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._inflight.clear()
        return self._channel, self._slots

    async def _ask(self, name: str, rtype: str) -> Answer[Any]:
        import aiodns
        from pycares.errno import ARES_EBADNAME

        channel, slots = self._channel_for(asyncio.get_running_loop())
        self.stats["queries"] += 1
        try:
            async with slots, asyncio.timeout(self.timeout + 0.25):
                result = await channel.query_dns(name, rtype)
        except TimeoutError:
            self.stats["tempfail"] += 1
            raise DnsTempError(name, rtype, f"no answer within {self.timeout:g} seconds") from None
        except UnicodeError:  # IDNA refuses it (e.g. a control character): no such name can exist
            return Answer(name, rtype, (), nxdomain=True)
        except aiodns.error.DNSError as exc:
            if exc.args and exc.args[0] == ARES_EBADNAME:
                # c-ares refuses names with characters like ':' or '/', which DNS allows (RFC 2181
                # 11) and SPF macros produce; the rare such name goes through dnspython.
                return await self._ask_dnspython(name, rtype)
            return self._from_error(name, rtype, exc)
        return self._from_result(name, rtype, result)

    async def _ask_dnspython(self, name: str, rtype: str) -> Answer[Any]:
        import dns.asyncresolver
        import dns.exception
        import dns.nameserver
        import dns.resolver

        resolver = dns.asyncresolver.Resolver(configure=not self.nameservers)
        if self.nameservers:
            servers = [parse_hostport(s) for s in self.nameservers]
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
        resolver.lifetime = self.timeout
        try:
            answer = await resolver.resolve(name, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rtype, (), nxdomain=True, ttl=self.negative_ttl)
        except dns.exception.DNSException as exc:
            self.stats["tempfail"] += 1
            raise DnsTempError(name, rtype, str(exc) or type(exc).__name__) from None
        if answer.rrset is None:
            return Answer(name, rtype, (), ttl=self.negative_ttl)
        records = tuple(_dnspython_value(rtype, rdata) for rdata in answer.rrset)
        return Answer(name, rtype, records, ttl=min(float(answer.rrset.ttl), self.max_ttl))

    def _from_error(self, name: str, rtype: str, exc: aiodns.error.DNSError) -> Answer[Any]:
        import pycares.errno as codes

        errno = exc.args[0] if exc.args else None
        if errno == codes.ARES_ENOTFOUND:
            return Answer(name, rtype, (), nxdomain=True, ttl=self.negative_ttl)
        if errno == codes.ARES_ENODATA:
            return Answer(name, rtype, (), ttl=self.negative_ttl)
        self.stats["tempfail"] += 1
        symbol = next((s for s in _TEMPORARY_ERRORS if getattr(codes, "ARES_" + s, None) == errno), None)
        problem = exc.args[1] if len(exc.args) > 1 else str(exc)
        raise DnsTempError(name, rtype, f"{problem} ({symbol})" if symbol else str(problem)) from None

    def _from_result(self, name: str, rtype: str, result: pycares.DNSResult) -> Answer[Any]:
        wanted = _TYPE_CODES[rtype]
        records: list[Any] = []
        ttl = self.max_ttl
        for record in result.answer:
            if record.type != wanted:
                continue  # the CNAMEs leading to the answer
            ttl = min(ttl, float(record.ttl))
            records.append(_value(rtype, record.data))
        if not records:
            return Answer(name, rtype, (), ttl=self.negative_ttl)
        return Answer(name, rtype, tuple(records), ttl=ttl)

    def _remember(self, key: tuple[str, str], answer: Answer[Any]) -> None:
        if self.cache_size <= 0 or answer.ttl <= 0:
            return
        if len(self._cache) >= self.cache_size:
            now = time.monotonic()
            expired = [k for k, (until, _) in self._cache.items() if until <= now]
            for stale in expired or [next(iter(self._cache))]:
                del self._cache[stale]
        self._cache[key] = (time.monotonic() + answer.ttl, answer)


def _value(rtype: str, data: Any) -> Any:
    if rtype in ("A", "AAAA"):
        return str(data.addr)
    if rtype == "MX":
        return MX(int(data.priority), str(data.exchange).rstrip("."))
    if rtype == "TXT":
        return bytes(data.data)
    if rtype == "PTR":
        return str(data.dname).rstrip(".")
    if rtype == "NS":
        return str(data.nsdname).rstrip(".")
    return str(data.cname).rstrip(".")


def _dnspython_value(rtype: str, rdata: Any) -> Any:
    if rtype == "MX":
        return MX(int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True))
    if rtype == "TXT":
        return b"".join(rdata.strings)
    if rtype in ("PTR", "NS", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True)
    return str(rdata.address)


def _cares_server(value: str) -> str:
    """Our "host:port" (port 53 if omitted, "[v6]:port") as c-ares expects it."""
    host, port = parse_hostport(value, default_port=53)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
