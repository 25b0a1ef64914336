"""The reason catalog: every refusal, temporary failure and outcome has a stable dotted code.

Each entry carries the SMTP reply (code, enhanced status code, an English sentence naming the
cause and the remedy) and, for the trace and the web pages, a title, an explanation and a
remedy in German and English plus who must act. Texts are `str.format` templates; the values
(`{client_ip}`, `{zone}`, ...) come from the check that decided, and stranger-controlled values
are made printable before they are inserted (see `render`).

Adding a capability means adding entries here, not new reply code elsewhere.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from mailwarden.text import printable

Actor = Literal["sender", "recipient", "provider", "none"]
Lang = Literal["en", "de"]
LANGS: Final[tuple[Lang, ...]] = ("en", "de")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reason:
    code: str
    smtp_code: int
    enhanced: str
    actor: Actor
    reply: str  # English SMTP reply sentence (template), without code, enhanced code and ref
    title: Mapping[Lang, str]
    explanation: Mapping[Lang, str]  # customer-facing: what happened and why (template)
    remedy: Mapping[Lang, str]  # who does what to fix it (template)

    @property
    def temporary(self) -> bool:
        return 400 <= self.smtp_code < 500

    @property
    def permanent(self) -> bool:
        return self.smtp_code >= 500

    @property
    def params(self) -> frozenset[str]:
        """The placeholder names its templates use."""
        names: set[str] = set()
        texts = [self.reply, *self.title.values(), *self.explanation.values(), *self.remedy.values()]
        for text in texts:
            names.update(f for _, f, _, _ in string.Formatter().parse(text) if f)
        return frozenset(names)


class _Values(dict[str, str]):
    """Template values; a placeholder the caller did not supply renders visibly, not as a crash."""

    def __init__(self, code: str, values: Mapping[str, object]) -> None:
        super().__init__({k: printable(str(v)) for k, v in values.items() if v is not None})
        self._code = code

    def __missing__(self, key: str) -> str:
        log.warning("catalog entry %s rendered without value for {%s}", self._code, key)
        return "(unknown)"


def render(template: str, code: str, values: Mapping[str, object]) -> str:
    return template.format_map(_Values(code, values))


def _r(
    code: str,
    smtp_code: int,
    enhanced: str,
    actor: Actor,
    reply: str,
    *,
    title: tuple[str, str],
    explanation: tuple[str, str],
    remedy: tuple[str, str],
) -> Reason:
    return Reason(
        code=code,
        smtp_code=smtp_code,
        enhanced=enhanced,
        actor=actor,
        reply=reply,
        title={"en": title[0], "de": title[1]},
        explanation={"en": explanation[0], "de": explanation[1]},
        remedy={"en": remedy[0], "de": remedy[1]},
    )


_ENTRIES: Final[list[Reason]] = [
    # ---------------------------------------------------------------- the client (sending server)
    _r(
        "client.dnsbl",
        554,
        "5.7.1",
        "sender",
        "Your server {client_ip} is listed on {zone} as {meaning}; {advice}{txt}",
        title=("Sending server is on a blocklist", "Sendender Server steht auf einer Sperrliste"),
        explanation=(
            "The server that tried to deliver the message ({client_ip}) is listed on the blocklist "
            "{zone} as {meaning}. Our mail server therefore refused the message during delivery; "
            "the sender received an error message.",
            "Der Server, der die Nachricht zustellen wollte ({client_ip}), steht auf der Sperrliste "
            "{zone} ({meaning}). Unser Mailserver hat die Nachricht deshalb bei der Zustellung "
            "abgelehnt; der Absender hat eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "The sender's administrator must fix this: {advice}",
            "Der Administrator des Absenders muss das beheben: {advice}",
        ),
    ),
    _r(
        "client.dynamic_rdns",
        550,
        "5.7.25",
        "sender",
        "Your server {client_ip} has the generic hostname {client_name} ({why}), which looks like a "
        "dynamic or end-user address; send through your provider's mail server or give the address a "
        "proper hostname.",
        title=("Sending server on a dynamic address", "Sendender Server an einer dynamischen Adresse"),
        explanation=(
            "The message came from {client_ip} ({client_name}). That name looks like a dial-up, DSL "
            "or cable address, from which mail servers are not expected to deliver directly - "
            "typically an in-house server sending without its provider's relay.",
            "Die Nachricht kam von {client_ip} ({client_name}). Der Name sieht nach einem Einwahl-, "
            "DSL- oder Kabelanschluss aus, von dem Mailserver nicht direkt zustellen sollen - "
            "typischerweise ein hauseigener Server, der ohne das Relay seines Providers sendet.",
        ),
        remedy=(
            "The sender's administrator should send through the provider's mail server (smarthost) "
            "or get a static address with a proper reverse DNS name.",
            "Der Administrator des Absenders sollte über den Mailserver seines Providers "
            "(Smarthost) senden oder eine feste Adresse mit passendem Reverse-DNS-Namen nutzen.",
        ),
    ),
    _r(
        "client.no_rdns",
        550,
        "5.7.25",
        "sender",
        "Your server {client_ip} has no reverse DNS (PTR) record; ask the owner of the address to "
        "set one that names your mail server.",
        title=("Sending server has no reverse DNS", "Sendender Server ohne Reverse-DNS"),
        explanation=(
            "The address {client_ip} that delivered the message has no reverse DNS name. Mail "
            "servers are expected to have one; addresses without it are mostly infected PCs.",
            "Die Adresse {client_ip}, von der die Nachricht kam, hat keinen Reverse-DNS-Namen. "
            "Mailserver sollten einen haben; Adressen ohne ihn sind meist infizierte PCs.",
        ),
        remedy=(
            "The sender's administrator must have a PTR record set for {client_ip} (by the owner "
            "of the address, usually the provider).",
            "Der Administrator des Absenders muss für {client_ip} einen PTR-Eintrag setzen lassen "
            "(vom Inhaber der Adresse, meist dem Provider).",
        ),
    ),
    _r(
        "client.fcrdns_mismatch",
        550,
        "5.7.25",
        "sender",
        "The reverse DNS name {client_name} of your server {client_ip} does not resolve back to "
        "{client_ip}; make the PTR and A/AAAA records match.",
        title=("Reverse DNS of the sending server does not match", "Reverse-DNS des Absenderservers passt nicht"),
        explanation=(
            "The name {client_name} that {client_ip} claims in reverse DNS does not point back to "
            "that address, so the server's identity cannot be confirmed.",
            "Der Name {client_name}, den {client_ip} im Reverse-DNS angibt, zeigt nicht auf diese "
            "Adresse zurück; die Identität des Servers lässt sich nicht bestätigen.",
        ),
        remedy=(
            "The sender's administrator must make the PTR record of {client_ip} and the A/AAAA "
            "record of {client_name} agree.",
            "Der Administrator des Absenders muss PTR-Eintrag von {client_ip} und A/AAAA-Eintrag "
            "von {client_name} in Einklang bringen.",
        ),
    ),
    _r(
        "client.allowlisted",
        250,
        "2.0.0",
        "none",
        "Your server {client_ip} is on the allowlist {zone}.",
        title=("Sending server on an allowlist", "Sendender Server auf einer Positivliste"),
        explanation=(
            "The server {client_ip} is listed on the allowlist {zone} ({answer}), so blocklists and "
            "greylisting did not apply to it.",
            "Der Server {client_ip} steht auf der Positivliste {zone} ({answer}); Sperrlisten und "
            "Greylisting galten deshalb nicht für ihn.",
        ),
        remedy=("Nothing to do.", "Nichts zu tun."),
    ),
    _r(
        "client.pregreet",
        550,
        "5.5.1",
        "sender",
        "Protocol error: your server {client_ip} sent commands {after} seconds after connecting, before our "
        "greeting (we greet new clients after {wait} seconds); an SMTP client must wait for the 220 greeting. "
        "Fix the sending software or send through your provider's mail server.",
        title=("Sending server talked before the greeting", "Sendender Server sprach vor der Begrüßung"),
        explanation=(
            "The server {client_ip} sent SMTP commands {after} seconds after connecting, before our greeting. "
            "Mail servers wait for the greeting; software that does not is typically sending spam from an "
            "infected computer, so the message was refused.",
            "Der Server {client_ip} hat {after} Sekunden nach dem Verbindungsaufbau SMTP-Befehle gesendet, noch "
            "vor unserer Begrüßung. Mailserver warten auf die Begrüßung; Software, die das nicht tut, versendet "
            "typischerweise Spam von einem infizierten Rechner, deshalb wurde die Nachricht abgelehnt.",
        ),
        remedy=(
            "The sender's administrator must fix the sending software so that it waits for the greeting, or "
            "send through the provider's mail server.",
            "Der Administrator des Absenders muss die sendende Software so einstellen, dass sie auf die Begrüßung "
            "wartet, oder über den Mailserver des Providers versenden.",
        ),
    ),
    _r(
        "client.too_many_connections",
        421,
        "4.7.0",
        "sender",
        "Your server {client_ip} has more connections open to us than we allow per client ({limit} at "
        "once); please use fewer parallel connections and try again later.",
        title=(
            "Too many simultaneous connections from one server",
            "Zu viele gleichzeitige Verbindungen eines Servers",
        ),
        explanation=(
            "The server {client_ip} opened more simultaneous connections than we allow one sending "
            "server ({limit}). The connection was deferred; a normal mail server retries automatically.",
            "Der Server {client_ip} hat mehr gleichzeitige Verbindungen geöffnet, als wir einem "
            "sendenden Server erlauben ({limit}). Die Verbindung wurde vertagt; ein normaler "
            "Mailserver versucht es automatisch erneut.",
        ),
        remedy=(
            "Nothing to do if the sender retries; otherwise the sender should lower its concurrency.",
            "Nichts zu tun, wenn der Absender es erneut versucht; sonst sollte er weniger parallele "
            "Verbindungen nutzen.",
        ),
    ),
    _r(
        "helo.invalid",
        550,
        "5.7.1",
        "sender",
        "Your server introduced itself as {helo}, which is not valid: {problem}. Configure a fully "
        "qualified hostname that belongs to your server.",
        title=("Invalid server name in HELO", "Ungültiger Servername im HELO"),
        explanation=(
            "The sending server introduced itself with the name {helo}, which is not valid "
            "({problem}). Correctly configured mail servers use their own fully qualified name.",
            "Der sendende Server hat sich mit dem Namen {helo} gemeldet, der ungültig ist "
            "({problem}). Korrekt eingerichtete Mailserver verwenden ihren eigenen vollständigen "
            "Namen.",
        ),
        remedy=(
            "The sender's administrator must set the server's HELO name to its fully qualified hostname.",
            "Der Administrator des Absenders muss den HELO-Namen des Servers auf dessen "
            "vollständigen Hostnamen setzen.",
        ),
    ),
    # ---------------------------------------------------------------- the envelope sender
    _r(
        "sender.domain_missing",
        550,
        "5.1.8",
        "sender",
        "The sender domain {domain} has no MX, A or AAAA record, so nobody could reply to "
        "{sender}; publish DNS records for {domain}.",
        title=("Sender domain does not exist", "Absenderdomain existiert nicht"),
        explanation=(
            "The sender address {sender} uses the domain {domain}, which has no mail server in DNS "
            "(no MX, A or AAAA record). Mail from such a domain cannot be answered.",
            "Die Absenderadresse {sender} nutzt die Domain {domain}, für die im DNS kein Mailserver "
            "eingetragen ist (kein MX-, A- oder AAAA-Eintrag). Auf solche Mails kann niemand "
            "antworten.",
        ),
        remedy=(
            "The sender must use a valid address, or the domain's owner must publish DNS records.",
            "Der Absender muss eine gültige Adresse verwenden, oder der Inhaber der Domain muss "
            "DNS-Einträge veröffentlichen.",
        ),
    ),
    _r(
        "sender.mx_ip_literal",
        550,
        "5.1.8",
        "sender",
        "The MX record of the sender domain {domain} is {record}, an IP address written as a "
        "hostname; this violates RFC 5321 section 5.1 and RFC 2181 section 10.3. Point the MX at a "
        "hostname with an A/AAAA record.",
        title=("Sender domain has an IP address as MX", "Absenderdomain hat eine IP-Adresse als MX"),
        explanation=(
            "The domain {domain} names {record} as its mail server (MX record). An MX record must "
            "name a host, not an IP address (RFC 5321 5.1, RFC 2181 10.3); with this record, "
            "replies to the sender cannot be delivered reliably. This is a configuration error at "
            "the sender's DNS provider.",
            "Die Domain {domain} nennt {record} als Mailserver (MX-Eintrag). Ein MX-Eintrag muss "
            "einen Hostnamen nennen, keine IP-Adresse (RFC 5321 5.1, RFC 2181 10.3); mit diesem "
            "Eintrag lassen sich Antworten an den Absender nicht zuverlässig zustellen. Das ist ein "
            "Konfigurationsfehler beim DNS-Anbieter des Absenders.",
        ),
        remedy=(
            "The sender's DNS administrator must change the MX record of {domain} to a hostname "
            "(e.g. mail.{domain}) that has an A/AAAA record.",
            "Der DNS-Verwalter des Absenders muss den MX-Eintrag von {domain} auf einen Hostnamen "
            "(z. B. mail.{domain}) mit A/AAAA-Eintrag ändern.",
        ),
    ),
    _r(
        "sender.null_mx",
        550,
        "5.7.27",
        "sender",
        "The sender domain {domain} publishes a null MX (RFC 7505): it does not accept mail, so it "
        "must not send any either. Use a sender address that can receive replies.",
        title=("Sender domain accepts no mail", "Absenderdomain nimmt keine Mails an"),
        explanation=(
            "The domain {domain} declares with a null MX record (RFC 7505) that it receives no "
            "mail. A sender address in such a domain cannot receive replies or error messages.",
            "Die Domain {domain} erklärt mit einem Null-MX-Eintrag (RFC 7505), dass sie keine "
            "Mails empfängt. Eine Absenderadresse dieser Domain kann weder Antworten noch "
            "Fehlermeldungen empfangen.",
        ),
        remedy=(
            "The sender must use an address whose domain accepts mail.",
            "Der Absender muss eine Adresse verwenden, deren Domain Mails empfängt.",
        ),
    ),
    _r(
        "sender.no_mail_host",
        550,
        "5.1.8",
        "sender",
        "The mail servers of the sender domain {domain} ({hosts}) do not resolve to any address; "
        "fix the MX records or the A/AAAA records they point to.",
        title=("Sender domain's mail servers do not exist", "Mailserver der Absenderdomain existieren nicht"),
        explanation=(
            "The domain {domain} names {hosts} as its mail servers, but none of them has an "
            "address in DNS, so replies to the sender cannot be delivered.",
            "Die Domain {domain} nennt {hosts} als Mailserver, aber keiner davon hat eine Adresse "
            "im DNS; Antworten an den Absender sind nicht zustellbar.",
        ),
        remedy=(
            "The sender's DNS administrator must publish A/AAAA records for the MX hosts or fix the MX records.",
            "Der DNS-Verwalter des Absenders muss A/AAAA-Einträge für die MX-Hosts anlegen oder "
            "die MX-Einträge korrigieren.",
        ),
    ),
    _r(
        "sender.spf_fail",
        550,
        "5.7.23",
        "sender",
        "SPF check failed: {domain} does not allow {client_ip} to send its mail ({spf_detail}); the "
        "sender's administrator must send through an authorized server or update the SPF record.",
        title=("Sender not authorized by SPF", "Absender laut SPF nicht berechtigt"),
        explanation=(
            "The domain {domain} publishes an SPF record listing the servers allowed to send its "
            "mail. The message came from {client_ip}, which is not among them, so it may be forged.",
            "Die Domain {domain} veröffentlicht einen SPF-Eintrag mit den Servern, die für sie "
            "senden dürfen. Die Nachricht kam von {client_ip}, der nicht dazugehört; sie könnte "
            "gefälscht sein.",
        ),
        remedy=(
            "The sender's administrator must send through a server listed in the SPF record of "
            "{domain}, or add {client_ip} to it.",
            "Der Administrator des Absenders muss über einen im SPF-Eintrag von {domain} genannten "
            "Server senden oder {client_ip} dort aufnehmen.",
        ),
    ),
    _r(
        "sender.spf_temperror",
        451,
        "4.7.24",
        "none",
        "SPF check of {domain} failed temporarily ({spf_detail}); please try again later.",
        title=("SPF check failed temporarily", "SPF-Prüfung vorübergehend fehlgeschlagen"),
        explanation=(
            "The SPF record of {domain} could not be evaluated because of a temporary DNS error "
            "({spf_detail}). The message was deferred, not refused; the sending server retries.",
            "Der SPF-Eintrag von {domain} konnte wegen eines vorübergehenden DNS-Fehlers nicht "
            "ausgewertet werden ({spf_detail}). Die Nachricht wurde zurückgestellt, nicht abgelehnt; "
            "der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Nothing, if it happens rarely. Repeated: the DNS servers of {domain} (or ours) answer badly.",
            "Nichts, wenn es selten auftritt. Bei Häufung antworten die DNS-Server von {domain} "
            "(oder unsere) fehlerhaft.",
        ),
    ),
    _r(
        "sender.spf_permerror",
        550,
        "5.7.24",
        "sender",
        "The SPF record of {domain} is invalid ({spf_detail}); the domain's administrator must fix it.",
        title=("Invalid SPF record", "Ungültiger SPF-Eintrag"),
        explanation=(
            "The domain {domain} publishes an SPF record that cannot be evaluated ({spf_detail}).",
            "Die Domain {domain} veröffentlicht einen SPF-Eintrag, der nicht ausgewertet werden kann ({spf_detail}).",
        ),
        remedy=(
            "The DNS administrator of {domain} must correct the SPF record (RFC 7208).",
            "Der DNS-Verwalter von {domain} muss den SPF-Eintrag korrigieren (RFC 7208).",
        ),
    ),
    # ---------------------------------------------------------------- the recipient
    _r(
        "rcpt.unknown_user",
        550,
        "5.1.1",
        "sender",
        "The mailbox {recipient} does not exist here; please check the address for typing errors.",
        title=("Recipient address does not exist", "Empfängeradresse existiert nicht"),
        explanation=(
            "There is no mailbox {recipient} on our servers. The message was refused during "
            "delivery and the sender received an error message.",
            "Auf unseren Servern gibt es kein Postfach {recipient}. Die Nachricht wurde bei der "
            "Zustellung abgelehnt; der Absender hat eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "The sender must correct the recipient address.",
            "Der Absender muss die Empfängeradresse korrigieren.",
        ),
    ),
    _r(
        "rcpt.relay_denied",
        554,
        "5.7.1",
        "sender",
        "Relay access denied for {recipient}: {problem}; we only accept mail for our own domains.",
        title=("Relaying denied", "Weiterleitung verweigert"),
        explanation=(
            "The sending server asked us to deliver to {recipient}, which we do not accept mail "
            "for ({problem}). We only accept mail for our own customers' domains and never relay.",
            "Der sendende Server wollte über uns an {recipient} zustellen; dafür nehmen wir keine "
            "Mails an ({problem}). Wir nehmen nur Mails für die Domains unserer Kunden an und leiten "
            "nie weiter.",
        ),
        remedy=(
            "The sender must deliver to the recipient domain's own mail server (its MX).",
            "Der Absender muss an den Mailserver der Empfängerdomain (deren MX) zustellen.",
        ),
    ),
    _r(
        "rcpt.mailbox_full",
        452,
        "4.2.2",
        "recipient",
        "The mailbox {recipient} is full; please try again later.",
        title=("Mailbox full", "Postfach voll"),
        explanation=(
            "The mailbox {recipient} has reached its storage limit. The message was deferred; the "
            "sending server retries for a while.",
            "Das Postfach {recipient} hat seine Speichergrenze erreicht. Die Nachricht wurde "
            "zurückgestellt; der sendende Server versucht es eine Zeit lang erneut.",
        ),
        remedy=(
            "The recipient must delete or fetch mail to free space.",
            "Der Empfänger muss Mails löschen oder abrufen, um Platz zu schaffen.",
        ),
    ),
    _r(
        "rcpt.too_many",
        452,
        "4.5.3",
        "none",
        "Too many recipients in one message (at most {limit}); send the rest in another transaction.",
        title=("Too many recipients at once", "Zu viele Empfänger auf einmal"),
        explanation=(
            "The sending server named more than {limit} recipients in one transaction. The extra "
            "recipients were deferred; a normal mail server sends them again in a new transaction.",
            "Der sendende Server hat mehr als {limit} Empfänger in einem Durchgang genannt. Die "
            "übrigen wurden zurückgestellt; ein normaler Mailserver sendet sie in einem neuen "
            "Durchgang erneut.",
        ),
        remedy=(
            "Nothing to do; the sender retries automatically.",
            "Nichts zu tun; der Absender wiederholt automatisch.",
        ),
    ),
    _r(
        "rcpt.policy_split",
        452,
        "4.5.3",
        "none",
        "Recipient {recipient} has a different filter policy than the other recipients; please send "
        "it in a separate transaction.",
        title=("Recipient deferred to a separate delivery", "Empfänger in eigene Zustellung verschoben"),
        explanation=(
            "Recipients of one delivery must share one filter verdict. {recipient} uses different "
            "filter settings, so the sending server was asked to deliver to it separately.",
            "Empfänger einer Zustellung müssen ein gemeinsames Filterergebnis haben. {recipient} "
            "hat andere Filtereinstellungen; der sendende Server wurde gebeten, getrennt zuzustellen.",
        ),
        remedy=(
            "Nothing to do; the sender retries automatically.",
            "Nichts zu tun; der Absender wiederholt automatisch.",
        ),
    ),
    _r(
        "rcpt.downstream_refused",
        550,
        "5.0.0",
        "provider",
        "The mailbox server refused the message for {recipient}: {reply}",
        title=("Refused by the mailbox server", "Vom Postfachserver abgelehnt"),
        explanation=(
            "Our gateway accepted the message for checking, but the mailbox server behind it refused "
            "it for {recipient} ({reply}). The sending server was told during delivery.",
            "Unser Gateway hat die Nachricht zur Prüfung angenommen, aber der Postfachserver dahinter "
            "hat sie für {recipient} abgelehnt ({reply}). Der sendende Server wurde bei der Zustellung "
            "informiert.",
        ),
        remedy=(
            "Our team checks why the mailbox server refused it; the reply above names the cause.",
            "Unser Team prüft, warum der Postfachserver ablehnte; die Antwort oben nennt die Ursache.",
        ),
    ),
    # ---------------------------------------------------------------- the message
    _r(
        "msg.too_big",
        552,
        "5.3.4",
        "sender",
        "The message is too big: {size} bytes, the limit is {limit} bytes; send a smaller message "
        "or share large files by link.",
        title=("Message too large", "Nachricht zu groß"),
        explanation=(
            "The message has {size} bytes; we accept at most {limit} bytes per message.",
            "Die Nachricht hat {size} Bytes; wir nehmen höchstens {limit} Bytes pro Nachricht an.",
        ),
        remedy=(
            "The sender must send smaller attachments or share large files by a download link.",
            "Der Absender muss kleinere Anhänge senden oder große Dateien per Download-Link teilen.",
        ),
    ),
    _r(
        "msg.virus",
        554,
        "5.7.1",
        "sender",
        "Virus {virus} found in {where}; the message was not accepted. Clean the sender's computer "
        "and send the message again without the infected file.",
        title=("Virus found", "Virus gefunden"),
        explanation=(
            "The virus scanner found {virus} in {where}. The message was refused during delivery; "
            "the sender received an error message.",
            "Der Virenscanner hat {virus} in {where} gefunden. Die Nachricht wurde bei der "
            "Zustellung abgelehnt; der Absender hat eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "The sender must check the computer the file came from and send the message again "
            "without the infected file.",
            "Der Absender muss den Rechner prüfen, von dem die Datei stammt, und die Nachricht ohne "
            "die infizierte Datei erneut senden.",
        ),
    ),
    _r(
        "msg.spam",
        550,
        "5.7.1",
        "sender",
        "The message was classified as spam (score {score}, limit {limit}; {symbols}); it was not accepted.",
        title=("Classified as spam", "Als Spam eingestuft"),
        explanation=(
            "The spam filter scored the message {score} (limit {limit}); the strongest signs were "
            "{symbols}. It was refused during delivery; the sender received an error message.",
            "Der Spamfilter hat die Nachricht mit {score} bewertet (Grenze {limit}); die stärksten "
            "Merkmale waren {symbols}. Sie wurde bei der Zustellung abgelehnt; der Absender hat "
            "eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "If the message was legitimate, the sender should send it again without spam-like "
            "content, or the recipient can ask us to allow the sender.",
            "War die Nachricht erwünscht, sollte der Absender sie ohne spamtypische Inhalte erneut "
            "senden, oder der Empfänger bittet uns, den Absender zuzulassen.",
        ),
    ),
    _r(
        "msg.macro",
        554,
        "5.7.1",
        "sender",
        "The attachment {filename} contains an Office macro that runs automatically ({finding}); "
        "such files spread malware and are not accepted. Send the document as PDF or without macros.",
        title=("Office document with an auto-running macro", "Office-Dokument mit automatischem Makro"),
        explanation=(
            "The attachment {filename} contains a macro that runs when the document is opened "
            "({finding}). This is the most common way malware spreads, so the message was refused.",
            "Der Anhang {filename} enthält ein Makro, das beim Öffnen automatisch startet "
            "({finding}). So verbreitet sich Schadsoftware am häufigsten; die Nachricht wurde "
            "deshalb abgelehnt.",
        ),
        remedy=(
            "The sender should send the document as PDF or save it without macros (.docx/.xlsx).",
            "Der Absender sollte das Dokument als PDF oder ohne Makros (.docx/.xlsx) senden.",
        ),
    ),
    _r(
        "msg.dangerous_attachment",
        554,
        "5.7.1",
        "sender",
        "The attachment {filename} is a {filetype}, a file type that is not accepted because it can "
        "run programs; share it by download link or in a password-protected archive.",
        title=("Dangerous attachment", "Gefährlicher Anhang"),
        explanation=(
            "The attachment {filename} is a {filetype}, which can start programs on the "
            "recipient's computer. Such attachments are refused.",
            "Der Anhang {filename} ist ein(e) {filetype} und kann Programme auf dem Rechner des "
            "Empfängers starten. Solche Anhänge werden abgelehnt.",
        ),
        remedy=(
            "The sender should share the file by a download link.",
            "Der Absender sollte die Datei über einen Download-Link teilen.",
        ),
    ),
    _r(
        "msg.too_complex",
        554,
        "5.6.0",
        "sender",
        "The message structure cannot be checked: {problem}; send it again with fewer nested parts.",
        title=("Message structure too complex", "Nachrichtenstruktur zu verschachtelt"),
        explanation=(
            "The message is built in a way our content checks cannot follow ({problem}). A message "
            "that cannot be checked is not accepted; the sender received an error message.",
            "Die Nachricht ist so aufgebaut, dass unsere Inhaltsprüfung ihr nicht folgen kann "
            "({problem}). Eine Nachricht, die nicht geprüft werden kann, wird nicht angenommen; der "
            "Absender hat eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "The sender should send the content as ordinary attachments, without messages nested in messages.",
            "Der Absender sollte den Inhalt als gewöhnliche Anhänge senden, ohne ineinander verschachtelte Nachrichten.",
        ),
    ),
    _r(
        "msg.uninspectable",
        554,
        "5.6.0",
        "sender",
        "The file {path} could not be checked completely: {limit}; send the files unpacked or in smaller archives.",
        title=("Archive could not be checked completely", "Archiv konnte nicht vollständig geprüft werden"),
        explanation=(
            "The message carries an archive our content checks could not look into completely "
            "({path}: {limit}). What cannot be checked could hide a dangerous file, so the message "
            "was refused during delivery; the sender received an error message.",
            "Die Nachricht enthält ein Archiv, in das unsere Inhaltsprüfung nicht vollständig "
            "hineinsehen konnte ({path}: {limit}). Was nicht geprüft werden kann, könnte eine "
            "gefährliche Datei verbergen; die Nachricht wurde deshalb bei der Zustellung abgelehnt, "
            "der Absender hat eine Fehlermeldung erhalten.",
        ),
        remedy=(
            "The sender should send the files unpacked, or in several smaller archives without archives inside.",
            "Der Absender sollte die Dateien ungepackt senden oder in mehreren kleineren Archiven ohne "
            "weitere Archive darin.",
        ),
    ),
    _r(
        "msg.dmarc_reject",
        550,
        "5.7.1",
        "sender",
        "DMARC policy of {domain} is reject and the message failed DMARC ({dmarc_detail}); it looks "
        "forged. The sender must sign with DKIM or send from an SPF-authorized server.",
        title=("Failed the sender domain's DMARC policy", "DMARC-Richtlinie der Absenderdomain nicht erfüllt"),
        explanation=(
            "The domain {domain} in the From address asks receivers to refuse mail that fails its "
            "authentication checks (DMARC p=reject). This message failed them ({dmarc_detail}), "
            "so it is likely forged.",
            "Die Domain {domain} in der Absenderadresse verlangt, nicht authentifizierte Mails "
            "abzulehnen (DMARC p=reject). Diese Nachricht hat die Prüfung nicht bestanden "
            "({dmarc_detail}) und ist wahrscheinlich gefälscht.",
        ),
        remedy=(
            "If the message is genuine, the sender's administrator must fix DKIM signing or SPF for {domain}.",
            "Ist die Nachricht echt, muss der Administrator des Absenders DKIM-Signatur oder SPF "
            "für {domain} korrigieren.",
        ),
    ),
    # ---------------------------------------------------------------- the protocol
    _r(
        "protocol.bare_lf",
        550,
        "5.5.2",
        "sender",
        "The message contains a bare LF or CR line ending, which SMTP does not allow (RFC 5321 "
        "2.3.8); fix the sending software to use CRLF.",
        title=("Invalid line endings", "Ungültige Zeilenenden"),
        explanation=(
            "The sending software used bare line feeds instead of CRLF, which SMTP forbids and which "
            "is used in SMTP smuggling attacks.",
            "Die sendende Software hat einzelne Zeilenvorschübe statt CRLF verwendet; SMTP verbietet "
            "das, und es wird für SMTP-Smuggling-Angriffe genutzt.",
        ),
        remedy=(
            "The sender's administrator must update or fix the sending software.",
            "Der Administrator des Absenders muss die sendende Software aktualisieren oder korrigieren.",
        ),
    ),
    _r(
        "protocol.violation",
        500,
        "5.5.2",
        "sender",
        "Protocol error: {problem}.",
        title=("SMTP protocol error", "SMTP-Protokollfehler"),
        explanation=(
            "The sending server broke the SMTP protocol: {problem}.",
            "Der sendende Server hat das SMTP-Protokoll verletzt: {problem}.",
        ),
        remedy=(
            "The sender's administrator must fix the sending software.",
            "Der Administrator des Absenders muss die sendende Software korrigieren.",
        ),
    ),
    _r(
        "protocol.smtputf8_required",
        553,
        "5.6.7",
        "sender",
        "A non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM (RFC 6531).",
        title=("Non-ASCII address without SMTPUTF8", "Nicht-ASCII-Adresse ohne SMTPUTF8"),
        explanation=(
            "The sending server used an address with non-ASCII characters (such as ü or é) but did "
            "not announce SMTPUTF8 (RFC 6531) on MAIL FROM, which such an address requires; the "
            "address was refused.",
            "Der sendende Server hat eine Adresse mit Nicht-ASCII-Zeichen (etwa ü oder é) verwendet, "
            "bei MAIL FROM aber kein SMTPUTF8 (RFC 6531) angekündigt, das eine solche Adresse "
            "voraussetzt; die Adresse wurde abgelehnt.",
        ),
        remedy=(
            "The sender's administrator must enable SMTPUTF8 in the sending server (Postfix: "
            "smtputf8_enable = yes), or the sender uses an address of ASCII characters only.",
            "Der Administrator des Absenders muss SMTPUTF8 im sendenden Server einschalten (Postfix: "
            "smtputf8_enable = yes), oder der Absender nutzt eine Adresse nur aus ASCII-Zeichen.",
        ),
    ),
    _r(
        "protocol.timeout",
        421,
        "4.4.2",
        "sender",
        "Timeout: no data from your server for {seconds} seconds; closing the connection.",
        title=("Connection timed out", "Verbindung wegen Zeitüberschreitung beendet"),
        explanation=(
            "The sending server stopped sending for {seconds} seconds, so the connection was "
            "closed. Nothing was accepted from the unfinished transaction.",
            "Der sendende Server hat {seconds} Sekunden lang nichts gesendet; die Verbindung wurde "
            "beendet. Aus der unvollständigen Übertragung wurde nichts angenommen.",
        ),
        remedy=(
            "Usually nothing: the sender retries. Repeated timeouts point to a network problem on the sender's side.",
            "Meist nichts: der Absender versucht es erneut. Wiederholte Zeitüberschreitungen deuten "
            "auf ein Netzproblem beim Absender.",
        ),
    ),
    _r(
        "transaction.abandoned",
        451,
        "4.4.2",
        "sender",
        "The transaction was not completed; nothing was accepted.",
        title=("Delivery not completed", "Zustellung nicht abgeschlossen"),
        explanation=(
            "The sending server ended the connection before the message was complete, so nothing was "
            "accepted and no '250' was sent. A working mail server retries automatically.",
            "Der sendende Server hat die Verbindung beendet, bevor die Nachricht vollständig war; es wurde "
            "nichts angenommen und kein '250' gesendet. Ein funktionierender Mailserver versucht es "
            "automatisch erneut.",
        ),
        remedy=(
            "If the message does not arrive, the sender should check the outgoing queue of their mail "
            "server and send it again.",
            "Kommt die Nachricht nicht an, sollte der Absender die Warteschlange seines Mailservers prüfen "
            "und sie erneut senden.",
        ),
    ),
    # ---------------------------------------------------------------- policy
    _r(
        "greylisted",
        451,
        "4.7.1",
        "none",
        "Greylisted: mail from {client_ip} for this sender and recipient is delayed on first "
        "contact; please retry in {delay} seconds.",
        title=("Greylisted (delayed on first attempt)", "Greylisting (beim ersten Versuch verzögert)"),
        explanation=(
            "The first delivery attempt from {client_ip} was deferred by greylisting. Genuine mail "
            "servers retry after a few minutes and are then accepted; spam software usually does not.",
            "Der erste Zustellversuch von {client_ip} wurde durch Greylisting zurückgestellt. Echte "
            "Mailserver versuchen es nach einigen Minuten erneut und werden dann angenommen; "
            "Spam-Software meist nicht.",
        ),
        remedy=(
            "Nothing to do; the message arrives after the sender's retry.",
            "Nichts zu tun; die Nachricht kommt nach dem erneuten Versuch des Absenders an.",
        ),
    ),
    _r(
        "rate_limited",
        451,
        "4.7.0",
        "sender",
        "Too many {what} from {client_ip} ({count} in the last minute, limit {limit}); please slow "
        "down and try again later.",
        title=("Sending rate limit reached", "Sendelimit erreicht"),
        explanation=(
            "The server {client_ip} sent more {what} per minute than we allow ({limit}); further "
            "attempts were deferred.",
            "Der Server {client_ip} hat mehr {what} pro Minute gesendet als erlaubt ({limit}); "
            "weitere Versuche wurden zurückgestellt.",
        ),
        remedy=(
            "Nothing, if the sender retries later; bulk senders should lower their rate.",
            "Nichts, wenn der Absender später erneut sendet; Massenversender sollten langsamer senden.",
        ),
    ),
    # ---------------------------------------------------------------- our infrastructure (always 4xx)
    _r(
        "infra.dns_tempfail",
        451,
        "4.4.3",
        "provider",
        "Temporary DNS failure while checking {what}; please try again later.",
        title=("Temporary DNS failure", "Vorübergehender DNS-Fehler"),
        explanation=(
            "A DNS lookup needed for the decision ({what}) failed temporarily. The message was "
            "deferred, not refused; the sending server retries.",
            "Eine für die Entscheidung nötige DNS-Abfrage ({what}) ist vorübergehend fehlgeschlagen. "
            "Die Nachricht wurde zurückgestellt, nicht abgelehnt; der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Nothing, if it happens rarely. Repeated: our team checks its DNS resolvers.",
            "Nichts, wenn es selten auftritt. Bei Häufung prüft unser Team seine DNS-Resolver.",
        ),
    ),
    _r(
        "infra.scanner_unavailable",
        451,
        "4.3.0",
        "provider",
        "The {scanner} scanner is temporarily unavailable; please try again later.",
        title=("Scanner temporarily unavailable", "Scanner vorübergehend nicht verfügbar"),
        explanation=(
            "The {scanner} scanner could not check the message, so it was deferred instead of "
            "accepted unchecked. The sending server retries.",
            "Der {scanner}-Scanner konnte die Nachricht nicht prüfen; sie wurde deshalb "
            "zurückgestellt statt ungeprüft angenommen. Der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Our team restores the scanner; nothing to do for the sender.",
            "Unser Team stellt den Scanner wieder her; der Absender muss nichts tun.",
        ),
    ),
    _r(
        "infra.check_failed",
        451,
        "4.3.0",
        "provider",
        "A filter check ({check}) failed temporarily; please try again later.",
        title=("Filter check failed temporarily", "Filterprüfung vorübergehend fehlgeschlagen"),
        explanation=(
            "The check {check} could not finish ({problem}). Rather than accept the message "
            "unchecked, we deferred it; the sending server retries.",
            "Die Prüfung {check} konnte nicht abgeschlossen werden ({problem}). Statt die Nachricht "
            "ungeprüft anzunehmen, wurde sie zurückgestellt; der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Our team investigates; the sender retries automatically.",
            "Unser Team untersucht das; der Absender wiederholt automatisch.",
        ),
    ),
    _r(
        "infra.storage",
        452,
        "4.3.1",
        "provider",
        "Temporary storage problem on our side; please try again later.",
        title=("Temporary storage problem", "Vorübergehendes Speicherproblem"),
        explanation=(
            "The message could not be stored safely ({problem}), so it was not accepted; the sending server retries.",
            "Die Nachricht konnte nicht sicher gespeichert werden ({problem}) und wurde deshalb "
            "nicht angenommen; der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Our team fixes the storage; the sender retries automatically.",
            "Unser Team behebt das Speicherproblem; der Absender wiederholt automatisch.",
        ),
    ),
    _r(
        "infra.event_spool_full",
        451,
        "4.3.0",
        "provider",
        "Our records of mail cannot be written at the moment; please try again later.",
        title=("Mail records cannot be written", "Mail-Aufzeichnungen nicht schreibbar"),
        explanation=(
            "Our database was unreachable and this node's local spool for the records of mail was full "
            "or not writable ({problem}), so the message was not accepted: we accept mail only with its "
            "record. The sending server retries.",
            "Unsere Datenbank war nicht erreichbar und der lokale Zwischenspeicher dieses Knotens für die "
            "Aufzeichnungen war voll oder nicht schreibbar ({problem}); die Nachricht wurde deshalb nicht "
            "angenommen, denn wir nehmen Mail nur mit ihrer Aufzeichnung an. Der sendende Server versucht es erneut.",
        ),
        remedy=(
            "Our team brings the database back or frees the spool; the sender retries automatically.",
            "Unser Team stellt die Datenbank wieder her oder leert den Zwischenspeicher; der Absender "
            "wiederholt automatisch.",
        ),
    ),
    _r(
        "infra.downstream",
        451,
        "4.4.1",
        "provider",
        "The mailbox server is temporarily unavailable; please try again later.",
        title=("Mailbox server temporarily unavailable", "Postfachserver vorübergehend nicht erreichbar"),
        explanation=(
            "The mailbox server behind our gateway did not accept the message ({problem}), so we "
            "deferred it instead of accepting it; the sending server retries.",
            "Der Postfachserver hinter unserem Gateway hat die Nachricht nicht angenommen "
            "({problem}); wir haben sie deshalb zurückgestellt statt angenommen. Der sendende "
            "Server versucht es erneut.",
        ),
        remedy=("Our team restores the mailbox server.", "Unser Team stellt den Postfachserver wieder her."),
    ),
    _r(
        "infra.server_busy",
        421,
        "4.3.2",
        "provider",
        "Our server is busy: it has its limit of {limit} connections open, from all senders together. "
        "This is our load, not yours, and nothing needs changing on your side; please try again later.",
        title=("Our server was busy", "Unser Server war ausgelastet"),
        explanation=(
            "Our mail server had its maximum of {limit} simultaneous connections open, from all "
            "sending servers together, so the connection from {client_ip} was deferred. The load "
            "was ours, not the sender's; the sending server retries automatically.",
            "Unser Mailserver hatte die Höchstzahl von {limit} gleichzeitigen Verbindungen aller "
            "sendenden Server zusammen erreicht; die Verbindung von {client_ip} wurde deshalb "
            "vertagt. Die Last lag bei uns, nicht beim Absender; der sendende Server versucht es "
            "automatisch erneut.",
        ),
        remedy=(
            "Nothing for the sender. If it happens often, our team adds capacity or raises smtp.max_connections.",
            "Für den Absender nichts. Passiert es häufig, erweitert unser Team die Kapazität oder "
            "erhöht smtp.max_connections.",
        ),
    ),
    _r(
        "infra.shutdown",
        421,
        "4.3.2",
        "provider",
        "Service shutting down; please try again later.",
        title=("Server restarting", "Server startet neu"),
        explanation=(
            "Our mail server was restarting; the unfinished delivery was deferred and the sending server retries.",
            "Unser Mailserver wurde neu gestartet; die unvollständige Zustellung wurde "
            "zurückgestellt, der sendende Server versucht es erneut.",
        ),
        remedy=("Nothing to do.", "Nichts zu tun."),
    ),
    # ---------------------------------------------------------------- accepted mail and its life
    _r(
        "delivered",
        250,
        "2.0.0",
        "none",
        "Message accepted and stored for {recipients}.",
        title=("Delivered", "Zugestellt"),
        explanation=(
            "The message was accepted and stored in the mailbox {recipient} ({folder}).",
            "Die Nachricht wurde angenommen und im Postfach {recipient} ({folder}) abgelegt.",
        ),
        remedy=("Nothing to do.", "Nichts zu tun."),
    ),
    _r(
        "delivered.junk",
        250,
        "2.0.0",
        "recipient",
        "Message accepted and stored for {recipients}.",
        title=("Delivered into the Junk folder", "In den Spam-Ordner zugestellt"),
        explanation=(
            "The message was accepted but looked like spam (score {score}), so it was stored in the "
            "Junk folder of {recipient}, not in the inbox.",
            "Die Nachricht wurde angenommen, sah aber nach Spam aus (Bewertung {score}); sie liegt "
            "deshalb im Spam-Ordner von {recipient}, nicht im Posteingang.",
        ),
        remedy=(
            "The recipient should look in the Junk folder and mark the message as not spam.",
            "Der Empfänger sollte im Spam-Ordner nachsehen und die Nachricht als erwünscht markieren.",
        ),
    ),
    _r(
        "delivered.unconfirmed",
        250,
        "2.0.0",
        "none",
        "Message stored for {recipients}, but the sender got no reply.",
        title=("Delivered, but the sender got no confirmation", "Zugestellt, aber ohne Bestätigung an den Absender"),
        explanation=(
            "The message was stored in the mailbox {recipient} ({folder}) at {delivered_at}, but our mail server "
            "stopped (a crash or power failure) before it could confirm this to the sending server. The sender "
            "got no reply, so the sending server will probably send the message again and it may arrive twice.",
            "Die Nachricht wurde am {delivered_at} im Postfach {recipient} ({folder}) abgelegt, aber unser "
            "Mailserver hat angehalten (Absturz oder Stromausfall), bevor er das dem sendenden Server bestätigen "
            "konnte. Der Absender hat keine Antwort erhalten; der sendende Server schickt die Nachricht deshalb "
            "wahrscheinlich erneut, sodass sie doppelt ankommen kann.",
        ),
        remedy=(
            "Nothing is lost. If the message arrives twice, the recipient can delete one of the copies.",
            "Es ist nichts verloren. Kommt die Nachricht doppelt an, kann der Empfänger eine der Kopien löschen.",
        ),
    ),
    _r(
        "access.retrieved",
        250,
        "2.0.0",
        "recipient",
        "Message retrieved.",
        title=("Fetched by a mail program", "Von einem Mailprogramm abgerufen"),
        explanation=(
            "The message was fetched from the mailbox {recipient} by a {protocol} client at {client_ip} at {at}.",
            "Die Nachricht wurde aus dem Postfach {recipient} von einem {protocol}-Programm an "
            "{client_ip} um {at} abgerufen.",
        ),
        remedy=("Check the mail program that fetched it.", "Im abrufenden Mailprogramm nachsehen."),
    ),
    _r(
        "access.deleted",
        250,
        "2.0.0",
        "recipient",
        "Message deleted.",
        title=("Fetched and deleted from the server", "Abgerufen und vom Server gelöscht"),
        explanation=(
            "The message was deleted from the mailbox {recipient} by a {protocol} client at {client_ip} at {at}.",
            "Die Nachricht wurde aus dem Postfach {recipient} von einem {protocol}-Programm an "
            "{client_ip} um {at} gelöscht.",
        ),
        remedy=(
            "Look for the device at {client_ip} that fetches this mailbox, e.g. another computer "
            "or phone set to POP3 'delete from server'.",
            "Das Gerät an {client_ip} suchen, das dieses Postfach abruft, z. B. ein weiterer "
            "Rechner oder ein Telefon mit POP3 'vom Server löschen'.",
        ),
    ),
    _r(
        "access.login_failed",
        535,
        "5.7.8",
        "recipient",
        "Invalid user name or password.",
        title=("Mailbox login failed", "Anmeldung am Postfach fehlgeschlagen"),
        explanation=(
            "A {protocol} login to the mailbox {recipient} from {client_ip} failed ({problem}).",
            "Eine {protocol}-Anmeldung am Postfach {recipient} von {client_ip} ist fehlgeschlagen ({problem}).",
        ),
        remedy=(
            "If it was your own mail program, correct the password saved in it. If you do not know "
            "the address {client_ip}, someone is guessing the password: choose a strong one.",
            "War es Ihr eigenes Mailprogramm, korrigieren Sie das dort gespeicherte Passwort. Kennen "
            "Sie die Adresse {client_ip} nicht, versucht jemand das Passwort zu erraten: wählen Sie ein starkes.",
        ),
    ),
    _r(
        "access.login_locked",
        454,
        "4.7.0",
        "recipient",
        "Too many failed logins; try again later.",
        title=("Logins temporarily locked", "Anmeldung vorübergehend gesperrt"),
        explanation=(
            "After repeated failed logins ({locked}), logins were refused for a while; this "
            "attempt to {recipient} from {client_ip} was refused without checking the password.",
            "Nach wiederholt fehlgeschlagenen Anmeldungen ({locked}) wurden Anmeldungen eine Zeit "
            "lang abgewiesen; dieser Versuch an {recipient} von {client_ip} wurde ohne Prüfung des "
            "Passworts abgewiesen.",
        ),
        remedy=(
            "Wait {minutes} minutes, then log in with the correct password; fix the password saved "
            "in every mail program that fetches this mailbox.",
            "{minutes} Minuten warten und dann mit dem richtigen Passwort anmelden; das gespeicherte "
            "Passwort in jedem Mailprogramm korrigieren, das dieses Postfach abruft.",
        ),
    ),
    _r(
        "access.in_use",
        450,
        "4.2.0",
        "recipient",
        "The mailbox is in use by another session; try again later.",
        title=("Mailbox busy", "Postfach belegt"),
        explanation=(
            "A {protocol} client at {client_ip} logged in to {recipient} while another session was "
            "still fetching it, so it was turned away (one POP3 session per mailbox at a time).",
            "Ein {protocol}-Programm an {client_ip} hat sich an {recipient} angemeldet, während eine "
            "andere Sitzung das Postfach noch abrief; es wurde deshalb abgewiesen (nur eine "
            "POP3-Sitzung je Postfach zugleich).",
        ),
        remedy=(
            "Two devices fetch this mailbox: check which other device does, and whether it deletes "
            "the mail on the server.",
            "Zwei Geräte rufen dieses Postfach ab: prüfen, welches andere Gerät das tut und ob es die "
            "Nachrichten auf dem Server löscht.",
        ),
    ),
]

CATALOG: Final[dict[str, Reason]] = {entry.code: entry for entry in _ENTRIES}


def get(code: str) -> Reason:
    try:
        return CATALOG[code]
    except KeyError:
        raise KeyError(f"reason code {code!r} is not in the catalog (mailwarden/catalog.py)") from None
