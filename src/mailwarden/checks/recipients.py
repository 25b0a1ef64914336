"""Recipients: accept only our own domains and existing mailboxes; never relay.

Relay tricks are refused as relaying, not as unknown users: `user%other@ourdomain` (the percent
hack), `"user@other"@ourdomain` (a quoted local part hiding a second address), `user!other`
(bang paths) and address literals `user@[192.0.2.1]`. A source route `@route:user@dom` is
ignored as RFC 5321 4.1.2 says, so only the final address counts.
"""

from __future__ import annotations

from mailwarden.addresses import ROUTING_CHARS, AddressError, split
from mailwarden.checks.base import Check, CheckContext, Recipient, Services, Verdict
from mailwarden.store.parts import MailboxLookup


class RecipientsCheck(Check):
    name = "recipients"

    def __init__(self, mailboxes: MailboxLookup) -> None:
        self.mailboxes = mailboxes

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.store)

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | Recipient | None:
        try:
            address = split(recipient)
        except AddressError as exc:
            return Verdict.reject("rcpt.relay_denied", recipient=recipient, problem=str(exc))
        mail = ctx.config.mail
        if not address.domain:
            if address.local.lower() == "postmaster" and mail.postmaster:  # RFC 5321 4.1.1.3
                return Recipient(recipient, mail.postmaster)
            return Verdict.reject("rcpt.relay_denied", recipient=recipient, problem="the address has no domain")
        if address.domain.startswith("["):
            return Verdict.reject("rcpt.relay_denied", recipient=recipient, problem="address literals are not accepted")
        if address.domain not in ctx.services.local_domains:
            return Verdict.reject(
                "rcpt.relay_denied", recipient=recipient, problem=f"{address.domain} is not a domain we serve"
            )
        routing = [c for c in ROUTING_CHARS if c in address.local]
        if routing:
            return Verdict.reject(
                "rcpt.relay_denied",
                recipient=recipient,
                problem=f"the local part contains the routing character {routing[0]}",
            )
        for candidate in self._candidates(address.local.lower(), address.domain, mail.recipient_delimiter):
            mailbox = await self.mailboxes.find_mailbox(candidate)
            if mailbox is not None:
                return Recipient(recipient, mailbox.address, mailbox.settings)
        if address.local.lower() == "postmaster" and mail.postmaster:
            return Recipient(recipient, mail.postmaster)
        return Verdict.reject("rcpt.unknown_user", recipient=recipient)

    @staticmethod
    def _candidates(local: str, domain: str, delimiter: str) -> list[str]:
        candidates = [f"{local}@{domain}"]
        if delimiter and delimiter in local:
            base = local.split(delimiter, 1)[0]
            if base:
                candidates.append(f"{base}@{domain}")
        return candidates
