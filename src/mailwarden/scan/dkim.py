"""DKIM (RFC 6376) verification of every signature, with dkimpy and our own resolver.

dkimpy's asyncio API (`dkim.asyncsupport.DKIM.verify`) is used with our DNS function: its default
builds a new c-ares channel per lookup and asks the system resolver. Hashing a large body is CPU
work, so verification runs in a worker thread with its own event loop; the key lookups hop back
to the session loop, where the shared resolver (cache, limits, temp-failure semantics) lives.

Results follow RFC 8601: pass, fail (the signature does not verify), permerror (no usable key
or a broken signature), temperror (DNS did not answer), neutral (a signature we do not check).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Final

import dkim
from dkim.asyncsupport import DKIM

from mailwarden.dns import DnsTempError, Resolver

MAX_SIGNATURES: Final = 5
_quiet = logging.getLogger("mailwarden.scan.dkim.dkimpy")
_quiet.setLevel(logging.CRITICAL)

TxtLookup = Callable[[str], Coroutine[Any, Any, bytes | None]]


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, permerror, temperror, neutral
    domain: str  # d=
    selector: str  # s=
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def txt_lookup(resolver: Resolver) -> TxtLookup:
    """Our DNS function: the key record's text, None when there is none, DnsTempError when DNS fails."""

    async def lookup(name: str) -> bytes | None:
        answer = await resolver.query(name.rstrip("."), "TXT")
        for record in answer.records:
            if b"p=" in record or record.startswith(b"v=DKIM1"):
                return record
        return answer.records[0] if answer.records else None

    return lookup


async def verify(message: bytes, lookup: TxtLookup, max_signatures: int = MAX_SIGNATURES) -> list[DkimResult]:
    """Verify each DKIM-Signature (the first `max_signatures`); [] when the message has none."""
    session_loop = asyncio.get_running_loop()

    async def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:  # noqa: ASYNC109 (dkimpy's signature; our resolver times out itself)
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        future: concurrent.futures.Future[bytes | None] = asyncio.run_coroutine_threadsafe(lookup(text), session_loop)
        return await asyncio.wrap_future(future)

    return await asyncio.to_thread(asyncio.run, _verify_all(message, dnsfunc, max_signatures))


async def _verify_all(
    message: bytes, dnsfunc: Callable[..., Awaitable[bytes | None]], max_signatures: int
) -> list[DkimResult]:
    try:
        checker = DKIM(message, logger=_quiet, minkey=1024)
    except dkim.DKIMException as exc:
        return [DkimResult("permerror", "", "", f"unparsable message ({exc})")]
    signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    keyless: set[str] = set()

    async def remembering(name: bytes | str, timeout: float = 5) -> bytes | None:  # noqa: ASYNC109 (as above)
        record = await dnsfunc(name, timeout)
        if record is None:  # dkimpy turns a missing key into a plain False: remember why
            keyless.add((name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".").lower())
        return record

    results = []
    for index, value in enumerate(signatures[:max_signatures]):
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            results.append(DkimResult("permerror", "", "", f"broken signature ({exc})"))
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        try:
            verified = await DKIM(message, logger=_quiet, minkey=1024).verify(idx=index, dnsfunc=remembering)
        except DnsTempError as exc:
            results.append(DkimResult("temperror", domain, selector, exc.problem))
            continue
        except dkim.KeyFormatError as exc:
            results.append(DkimResult("permerror", domain, selector, f"key: {exc}"))
            continue
        except dkim.DKIMException as exc:
            mismatch = "body hash mismatch" in str(exc)  # altered in transit: a failed signature, not a broken one
            results.append(DkimResult("fail" if mismatch else "permerror", domain, selector, str(exc)[:200]))
            continue
        except Exception as exc:  # dkimpy on hostile input: never a crash of the session
            results.append(DkimResult("permerror", domain, selector, f"{type(exc).__name__}: {exc}"))
            continue
        if verified:
            results.append(DkimResult("pass", domain, selector))
        elif f"{selector}._domainkey.{domain}".lower() in keyless:
            results.append(DkimResult("permerror", domain, selector, "no key published"))
        else:
            results.append(DkimResult("fail", domain, selector, "signature did not verify"))
    return results
