"""The trace's own sentences in German and English (the reasons' texts live in catalog.py).

Templates use `str.format` fields; values are made printable before they are inserted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from mailwarden.catalog import Lang
from mailwarden.text import printable

PHRASES: Final[dict[str, tuple[str, str]]] = {
    # ------------------------------------------------------------ status sentences (English, German)
    "status.rejected": (
        "Refused by our mail server at {at} with {code} {enhanced}.",
        "Von unserem Mailserver am {at} mit {code} {enhanced} abgelehnt.",
    ),
    "status.tempfailed": (
        "Temporarily refused by our mail server at {at} with {code} {enhanced}.",
        "Von unserem Mailserver am {at} vorübergehend mit {code} {enhanced} abgewiesen.",
    ),
    "status.accepted": (
        "Accepted by our mail server at {at} and handed on.",
        "Von unserem Mailserver am {at} angenommen und weitergegeben.",
    ),
    "status.delivered": (
        "Accepted and stored at {at} in the mailbox {mailbox} (folder {folder}).",
        "Am {at} angenommen und im Postfach {mailbox} (Ordner {folder}) abgelegt.",
    ),
    "status.junk": (
        "Accepted at {at} and stored in the Junk folder of {mailbox}.",
        "Am {at} angenommen und im Spam-Ordner von {mailbox} abgelegt.",
    ),
    "status.deferred": (
        "Deferred at {at}; delivery is retried.",
        "Am {at} zurückgestellt; die Zustellung wird wiederholt.",
    ),
    "status.bounced": ("Returned to the sender at {at}.", "Am {at} an den Absender zurückgeschickt."),
    "status.retrieved": (
        "Delivered at {delivered_at} into {mailbox} (folder {folder}), then fetched at {at}.",
        "Am {delivered_at} in {mailbox} (Ordner {folder}) zugestellt, dann am {at} abgerufen.",
    ),
    "status.deleted": (
        "Delivered at {delivered_at} into {mailbox} (folder {folder}), then fetched and deleted at {at}.",
        "Am {delivered_at} in {mailbox} (Ordner {folder}) zugestellt, dann am {at} abgerufen und gelöscht.",
    ),
    # ------------------------------------------------------------ notes added by rules
    "note.did_you_mean": (
        "Did you mean {suggestions}? That mailbox exists here; the address used differs by a typing error.",
        "Meinten Sie {suggestions}? Dieses Postfach gibt es hier; die verwendete Adresse weicht durch einen Tippfehler ab.",
    ),
    "note.did_you_mean_domain": (
        "Did you mean the domain {suggestions}? We serve that domain; {domain} is probably a typing error.",
        "Meinten Sie die Domain {suggestions}? Diese Domain betreuen wir; {domain} ist vermutlich ein Tippfehler.",
    ),
    "note.access": (
        "{what} at {at} by a {protocol} client at {client_ip}.",
        "{what} am {at} durch ein {protocol}-Programm an {client_ip}.",
    ),
    "note.other_device_network": (
        "The client at {client_ip} had not accessed this mailbox in the {days} days before; the usual clients are "
        "{usual}. It is in the same network: probably another device in your network (a second computer or a "
        "phone) set to fetch mail and delete it from the server.",
        "Das Programm an {client_ip} hat in den {days} Tagen davor nicht auf dieses Postfach zugegriffen; die "
        "üblichen Programme sind {usual}. Es liegt im selben Netz: vermutlich ein weiteres Gerät in Ihrem Netz "
        "(ein zweiter Rechner oder ein Telefon), das Mails abruft und vom Server löscht.",
    ),
    "note.other_device_foreign": (
        "The client at {client_ip} had not accessed this mailbox in the {days} days before; the usual clients are "
        "{usual}. If you do not recognise this device, change the mailbox password.",
        "Das Programm an {client_ip} hat in den {days} Tagen davor nicht auf dieses Postfach zugegriffen; die "
        "üblichen Programme sind {usual}. Kennen Sie dieses Gerät nicht, ändern Sie das Passwort des Postfachs.",
    ),
    "note.usual_device": (
        "{client_ip} is one of the clients that regularly fetch this mailbox.",
        "{client_ip} gehört zu den Programmen, die dieses Postfach regelmäßig abrufen.",
    ),
    "note.greylisted_before": (
        "The first attempt at {at} (ref {id}) was delayed by greylisting ({reason}); the sending server retried "
        "and the message was accepted {minutes} minutes later.",
        "Der erste Versuch am {at} (ref {id}) wurde durch Greylisting verzögert ({reason}); der sendende Server "
        "hat es erneut versucht, und die Nachricht wurde {minutes} Minuten später angenommen.",
    ),
    "note.retried": (
        "The sending server tried again at {at} (ref {id}): {status}.",
        "Der sendende Server hat es am {at} erneut versucht (ref {id}): {status}.",
    ),
    "note.never_retried": (
        "The sending server did not try again: no further attempt for this sender and recipient arrived "
        "up to {until} ({hours} hours later).",
        "Der sendende Server hat es nicht erneut versucht: bis {until} ({hours} Stunden später) kam kein weiterer "
        "Versuch für diesen Absender und Empfänger an.",
    ),
    "note.not_retried_yet": (
        "No retry has arrived yet; sending servers usually retry within minutes to an hour.",
        "Noch kein erneuter Versuch; sendende Server wiederholen üblicherweise innerhalb von Minuten bis einer Stunde.",
    ),
    "remedy.never_retried": (
        "The sender should check the outgoing queue of their mail server (it gave up or never retried) and "
        "send the message again.",
        "Der Absender sollte die Warteschlange seines Mailservers prüfen (er hat aufgegeben oder nie wiederholt) "
        "und die Nachricht erneut senden.",
    ),
    # ------------------------------------------------------------ nothing found
    "title.not_found": ("No such message reached us", "Keine solche Nachricht bei uns eingegangen"),
    "not_found.summary": (
        "We searched {searched} and found no connection or message. The message never reached our mail server: "
        "it was not refused by us and not lost here.",
        "Wir haben {searched} durchsucht und keine Verbindung und keine Nachricht gefunden. Die Nachricht hat "
        "unseren Mailserver nie erreicht: sie wurde von uns weder abgelehnt noch ging sie hier verloren.",
    ),
    "not_found.remedy": (
        "The sender should check the outgoing queue of their mail server, look for a bounce message (error "
        "report) they received, and check the recipient address for typing errors; with a bounce, "
        "`mailwarden explain-bounce` explains it.",
        "Der Absender sollte die Warteschlange seines Mailservers prüfen, nach einer erhaltenen Fehlermeldung "
        "(Bounce) suchen und die Empfängeradresse auf Tippfehler prüfen; eine Fehlermeldung erklärt "
        "`mailwarden explain-bounce`.",
    ),
    "not_found.near_miss": (
        "Similar address {address}: {count} message(s) in the same window.",
        "Ähnliche Adresse {address}: {count} Nachricht(en) im selben Zeitraum.",
    ),
    "not_found.near_miss_none": (
        "Similar address {address}: no messages in the same window either.",
        "Ähnliche Adresse {address}: auch keine Nachrichten im selben Zeitraum.",
    ),
    "not_found.unknown_id": ("the reference {id}", "die Referenz {id}"),
    "retention.note": (
        "The requested time starts at {start}, but events are kept for {days} days only; the oldest event "
        "kept is from {oldest}. Older messages can no longer be traced.",
        "Der angefragte Zeitraum beginnt am {start}, Ereignisse werden aber nur {days} Tage aufbewahrt; das "
        "älteste noch vorhandene ist vom {oldest}. Ältere Nachrichten lassen sich nicht mehr nachverfolgen.",
    ),
    # ------------------------------------------------------------ timeline steps
    "step.connect": ("Connection from {client_ip} ({client_name})", "Verbindung von {client_ip} ({client_name})"),
    "step.helo": ("Introduced itself as {helo}{tls}", "Hat sich als {helo} gemeldet{tls}"),
    "step.check": ("Check {check}: {result} {reason}", "Prüfung {check}: {result} {reason}"),
    "step.mail": ("Sender {sender} accepted", "Absender {sender} angenommen"),
    "step.rcpt": (
        "Recipient {recipient} accepted (mailbox {mailbox})",
        "Empfänger {recipient} angenommen (Postfach {mailbox})",
    ),
    "step.reject": ("Refused: {reply}", "Abgelehnt: {reply}"),
    "step.tempfail": ("Temporarily refused: {reply}", "Vorübergehend abgewiesen: {reply}"),
    "step.data": (
        "Message received: {size} bytes, Message-ID {message_id}",
        "Nachricht empfangen: {size} Bytes, Message-ID {message_id}",
    ),
    "step.data_no_id": (
        "Message received: {size} bytes, without Message-ID",
        "Nachricht empfangen: {size} Bytes, ohne Message-ID",
    ),
    "step.data_incomplete": (
        "Connection lost while the message was being sent; nothing was accepted",
        "Verbindung während der Übertragung abgebrochen; nichts wurde angenommen",
    ),
    "step.deliver": (
        "Stored in the mailbox {mailbox}, folder {folder}",
        "Im Postfach {mailbox} abgelegt, Ordner {folder}",
    ),
    "step.accept": ("Answered: {reply}", "Geantwortet: {reply}"),
    "step.retrieve": (
        "Fetched by a {protocol} client at {client_ip}",
        "Von einem {protocol}-Programm an {client_ip} abgerufen",
    ),
    "step.delete": (
        "Deleted by a {protocol} client at {client_ip}",
        "Von einem {protocol}-Programm an {client_ip} gelöscht",
    ),
    "step.defer": ("Deferred: {reply}", "Zurückgestellt: {reply}"),
    "step.bounce": ("Returned to the sender: {reply}", "An den Absender zurückgeschickt: {reply}"),
    "step.disconnect": ("Connection closed", "Verbindung beendet"),
    "step.attempt": (
        "Other attempt for this sender and recipient: {id} from {client_ip}, {status}",
        "Anderer Versuch für diesen Absender und Empfänger: {id} von {client_ip}, {status}",
    ),
    "step.other": ("{kind} {reason}", "{kind} {reason}"),
    "step.passed": (" (checks passed: {passed})", " (Prüfungen bestanden: {passed})"),
    # ------------------------------------------------------------ report labels
    "label.report": ("Evidence report", "Nachweisbericht"),
    "label.message": ("Message", "Nachricht"),
    "label.recipient": ("Recipient", "Empfänger"),
    "label.status": ("Status", "Status"),
    "label.summary": ("What happened", "Was geschah"),
    "label.responsibility": ("Who must act", "Wer handeln muss"),
    "label.remedy": ("What to do", "Was zu tun ist"),
    "label.notes": ("Details", "Einzelheiten"),
    "label.connection": ("Connection", "Verbindung"),
    "label.client": ("Sending server", "Sendender Server"),
    "label.rdns": ("Verified reverse DNS", "Bestätigter Reverse-DNS-Name"),
    "label.helo": ("HELO", "HELO"),
    "label.tls": ("TLS", "TLS"),
    "label.sender": ("Sender", "Absender"),
    "label.message_id": ("Message-ID", "Message-ID"),
    "label.size": ("Size (bytes)", "Größe (Bytes)"),
    "label.timeline": ("Timeline (UTC)", "Ablauf (UTC)"),
    "label.evidence": ("Evidence", "Nachweise"),
    "label.sha256": ("Evidence SHA-256", "SHA-256 der Nachweise"),
    "label.generated": ("Generated", "Erstellt"),
    "label.redacted": (
        "Addresses of third parties are masked.",
        "Adressen Dritter sind unkenntlich gemacht.",
    ),
    "actor.sender": (
        "the sender (or the sender's mail administrator)",
        "der Absender (bzw. dessen Mail-Administrator)",
    ),
    "actor.recipient": ("the recipient", "der Empfänger"),
    "actor.provider": ("we, the mail provider", "wir, der Mail-Anbieter"),
    "actor.none": ("nobody", "niemand"),
    # ------------------------------------------------------------ explain-bounce
    "bounce.title": ("Bounce explained", "Fehlermeldung erklärt"),
    "bounce.reporting": ("Reported by", "Gemeldet von"),
    "bounce.remote": ("Refused by (remote server)", "Abgelehnt von (entfernter Server)"),
    "bounce.status": ("Status", "Status"),
    "bounce.diagnostic": ("Server's reply", "Antwort des Servers"),
    "bounce.recipient": ("Recipient", "Empfänger"),
    "bounce.ours": (
        "This bounce refers to our message {id}; here is what happened to it:",
        "Diese Fehlermeldung bezieht sich auf unsere Nachricht {id}; das ist mit ihr geschehen:",
    ),
    "bounce.ref_unknown": (
        "The bounce names our reference {ref}, but it is not in our records (older than the retention, or another system).",
        "Die Fehlermeldung nennt unsere Referenz {ref}, sie ist aber nicht in unseren Daten (älter als die Aufbewahrung oder ein anderes System).",
    ),
    "bounce.ref_recipient": (
        "The bounce names our reference {ref}, but our message {ref} had other recipients than the bounce: "
        "the reference was copied from another message, so this bounce is not explained by it.",
        "Die Fehlermeldung nennt unsere Referenz {ref}, aber unsere Nachricht {ref} ging an andere Empfänger "
        "als die der Fehlermeldung: die Referenz stammt aus einer anderen Nachricht und erklärt diese "
        "Fehlermeldung nicht.",
    ),
    "bounce.ref_sender": (
        "The bounce names our reference {ref}, but our message {ref} came from another sender than the one "
        "the bounce went to: the reference was copied from another message, so this bounce is not explained by it.",
        "Die Fehlermeldung nennt unsere Referenz {ref}, aber unsere Nachricht {ref} kam von einem anderen "
        "Absender als dem, an den die Fehlermeldung ging: die Referenz stammt aus einer anderen Nachricht und "
        "erklärt diese Fehlermeldung nicht.",
    ),
    "bounce.meaning": ("What the status code means", "Was der Statuscode bedeutet"),
    "bounce.nothing": (
        "No status code, diagnostic or reference found. Paste the whole bounce message, including its technical part.",
        "Kein Statuscode, keine Diagnose und keine Referenz gefunden. Bitte die ganze Fehlermeldung einfügen, auch den technischen Teil.",
    ),
    "bounce.full_report": (
        "Full evidence report: mailwarden explain {id}",
        "Vollständiger Nachweisbericht: mailwarden explain {id}",
    ),
    # ------------------------------------------------------------ words
    "word.fetched": ("Fetched", "Abgerufen"),
    "word.deleted": ("Deleted", "Gelöscht"),
    "word.anytime": ("any time", "beliebige Zeit"),
    "word.from": ("sender", "Absender"),
    "word.to": ("recipient", "Empfänger"),
    "word.window": ("from {since} to {until}", "vom {since} bis {until}"),
    "word.now": ("now", "jetzt"),
    "word.unknown": ("(not recorded)", "(nicht erfasst)"),
    "word.none": ("none", "keine"),
    "word.no_rdns": ("no verified reverse DNS name", "kein bestätigter Reverse-DNS-Name"),
}


def phrase(key: str, lang: Lang, **values: object) -> str:
    """The sentence `key` in `lang`, filled with printable values."""
    english, german = PHRASES[key]
    template = german if lang == "de" else english
    return template.format_map(_Filled(values, lang))


class _Filled(dict[str, str]):
    def __init__(self, values: Mapping[str, object], lang: Lang) -> None:
        super().__init__({k: printable(str(v)) for k, v in values.items() if v is not None})
        self._lang = lang

    def __missing__(self, key: str) -> str:
        return PHRASES["word.unknown"][1 if self._lang == "de" else 0]
