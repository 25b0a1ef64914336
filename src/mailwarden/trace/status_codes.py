"""Enhanced mail system status codes (RFC 3463 and the IANA registry, RFC 5248) in plain words.

`explain("5.1.1", "de")` → class, subject and detail sentences for a sender holding a bounce.
"""

from __future__ import annotations

from typing import Final

from mailwarden import replycodes
from mailwarden.catalog import Lang

CLASSES: Final[dict[str, tuple[str, str]]] = {
    "2": (
        "Success: the message was delivered or relayed.",
        "Erfolg: die Nachricht wurde zugestellt oder weitergeleitet.",
    ),
    "4": (
        "Temporary failure: the message was valid, but a temporary condition stopped delivery; "
        "the sending server retries for a while.",
        "Vorübergehender Fehler: die Nachricht war gültig, aber ein vorübergehender Zustand hat die "
        "Zustellung verhindert; der sendende Server versucht es eine Zeit lang erneut.",
    ),
    "5": (
        "Permanent failure: sending the same message again will not help; the message or the address must change.",
        "Dauerhafter Fehler: erneutes Senden derselben Nachricht hilft nicht; Nachricht oder Adresse müssen sich ändern.",
    ),
}

SUBJECTS: Final[dict[str, tuple[str, str]]] = {
    "0": ("Other or undefined status.", "Sonstiger oder nicht näher bestimmter Status."),
    "1": ("Addressing: the sender or recipient address.", "Adressierung: die Absender- oder Empfängeradresse."),
    "2": ("Mailbox: the recipient's mailbox.", "Postfach: das Postfach des Empfängers."),
    "3": ("Mail system: the receiving mail server.", "Mailsystem: der empfangende Mailserver."),
    "4": ("Network and routing.", "Netzwerk und Weiterleitung."),
    "5": ("Mail delivery protocol (SMTP).", "Zustellprotokoll (SMTP)."),
    "6": ("Message content or media.", "Inhalt oder Format der Nachricht."),
    "7": ("Security or policy.", "Sicherheit oder Richtlinie."),
}

# X.Y.Z details (the class digit is left out): IANA "Enumerated Status Codes".
DETAILS: Final[dict[str, tuple[str, str]]] = {
    "0.0": ("Other undefined status.", "Sonstiger, nicht definierter Status."),
    "1.0": ("Other address status.", "Sonstiger Adressstatus."),
    "1.1": (
        "Bad destination mailbox address: the mailbox does not exist at the recipient's server. Check the address for typing errors.",
        "Ungültige Empfängeradresse: das Postfach gibt es beim Server des Empfängers nicht. Adresse auf Tippfehler prüfen.",
    ),
    "1.2": (
        "Bad destination system address: the recipient's domain does not exist or accepts no mail.",
        "Ungültiges Zielsystem: die Domain des Empfängers existiert nicht oder nimmt keine Mails an.",
    ),
    "1.3": ("Bad destination mailbox address syntax.", "Syntax der Empfängeradresse ungültig."),
    "1.4": ("Destination mailbox address ambiguous.", "Empfängeradresse mehrdeutig."),
    "1.5": ("Destination address valid.", "Empfängeradresse gültig."),
    "1.6": (
        "Destination mailbox has moved, no forwarding address.",
        "Empfängerpostfach umgezogen, keine Weiterleitungsadresse.",
    ),
    "1.7": ("Bad sender's mailbox address syntax.", "Syntax der Absenderadresse ungültig."),
    "1.8": (
        "Bad sender's system address: the sender's domain does not exist or has no usable mail server in DNS.",
        "Ungültiges Absendersystem: die Domain des Absenders existiert nicht oder hat keinen brauchbaren Mailserver im DNS.",
    ),
    "1.9": (
        "Message relayed to a non-compliant mailer.",
        "Nachricht an ein nicht standardkonformes System weitergegeben.",
    ),
    "1.10": (
        "Recipient address has a null MX: the domain accepts no mail.",
        "Empfängerdomain hat einen Null-MX: sie nimmt keine Mails an.",
    ),
    "2.0": ("Other or undefined mailbox status.", "Sonstiger Postfachstatus."),
    "2.1": ("Mailbox disabled, not accepting messages.", "Postfach deaktiviert, nimmt keine Nachrichten an."),
    "2.2": ("Mailbox full.", "Postfach voll."),
    "2.3": ("Message length exceeds an administrative limit.", "Nachricht größer als erlaubt."),
    "2.4": ("Mailing list expansion problem.", "Problem beim Verteilen an eine Mailingliste."),
    "3.0": ("Other or undefined mail system status.", "Sonstiger Status des Mailsystems."),
    "3.1": ("Mail system full (out of storage).", "Mailsystem voll (kein Speicherplatz)."),
    "3.2": ("System not accepting network messages.", "System nimmt derzeit keine Nachrichten an."),
    "3.3": ("System not capable of the selected features.", "System unterstützt die gewünschten Funktionen nicht."),
    "3.4": ("Message too big for the system.", "Nachricht zu groß für das System."),
    "3.5": ("System incorrectly configured.", "System falsch konfiguriert."),
    "3.6": ("Requested priority was changed.", "Angeforderte Priorität wurde geändert."),
    "4.0": ("Other or undefined network or routing status.", "Sonstiger Netzwerk- oder Weiterleitungsstatus."),
    "4.1": ("No answer from the receiving host.", "Keine Antwort vom empfangenden Server."),
    "4.2": ("Bad connection: the connection broke.", "Verbindung gestört oder abgebrochen."),
    "4.3": ("Directory server failure (e.g. DNS).", "Fehler eines Verzeichnisdienstes (z. B. DNS)."),
    "4.4": (
        "Unable to route: no mail server found for the domain.",
        "Keine Route: kein Mailserver für die Domain gefunden.",
    ),
    "4.5": ("Mail system congestion.", "Mailsystem überlastet."),
    "4.6": ("Routing loop detected.", "Weiterleitungsschleife erkannt."),
    "4.7": (
        "Delivery time expired: the sender's server gave up retrying.",
        "Zustellzeit abgelaufen: der sendende Server hat aufgegeben.",
    ),
    "5.0": ("Other or undefined protocol status.", "Sonstiger Protokollstatus."),
    "5.1": ("Invalid command.", "Ungültiger Befehl."),
    "5.2": ("Syntax error.", "Syntaxfehler."),
    "5.3": ("Too many recipients.", "Zu viele Empfänger."),
    "5.4": ("Invalid command arguments.", "Ungültige Befehlsparameter."),
    "5.5": ("Wrong protocol version.", "Falsche Protokollversion."),
    "5.6": ("Authentication exchange line is too long.", "Authentifizierungszeile zu lang."),
    "6.0": ("Other or undefined media error.", "Sonstiger Formatfehler."),
    "6.1": ("Media not supported.", "Format nicht unterstützt."),
    "6.2": ("Conversion required and prohibited.", "Umwandlung nötig, aber verboten."),
    "6.3": ("Conversion required but not supported.", "Umwandlung nötig, aber nicht unterstützt."),
    "6.4": ("Conversion with loss performed.", "Umwandlung mit Verlust durchgeführt."),
    "6.5": ("Conversion failed.", "Umwandlung fehlgeschlagen."),
    "6.6": ("Message content not available.", "Nachrichteninhalt nicht verfügbar."),
    "6.7": (
        "Non-ASCII addresses not permitted for that sender or recipient.",
        "Nicht-ASCII-Adressen für diesen Absender oder Empfänger nicht erlaubt.",
    ),
    "6.8": (
        "A UTF-8 reply is required, but not permitted by the client.",
        "UTF-8-Antwort nötig, vom Client aber nicht erlaubt.",
    ),
    "6.9": (
        "UTF-8 header message cannot be transferred to a recipient.",
        "Nachricht mit UTF-8-Kopfzeilen kann nicht an einen Empfänger übertragen werden.",
    ),
    "7.0": ("Other or undefined security status.", "Sonstiger Sicherheitsstatus."),
    "7.1": (
        "Delivery not authorized, message refused: the receiving server's policy refused it (blocklist, spam, virus, relaying, ...).",
        "Zustellung nicht erlaubt, Nachricht abgelehnt: eine Richtlinie des Empfangsservers hat sie abgelehnt (Sperrliste, Spam, Virus, Weiterleitung, ...).",
    ),
    "7.2": ("Mailing list expansion prohibited.", "Verteilung an die Mailingliste nicht erlaubt."),
    "7.3": ("Security conversion required but not possible.", "Sicherheitsumwandlung nötig, aber nicht möglich."),
    "7.4": ("Security features not supported.", "Sicherheitsfunktionen nicht unterstützt."),
    "7.5": ("Cryptographic failure.", "Kryptografischer Fehler."),
    "7.6": ("Cryptographic algorithm not supported.", "Kryptografischer Algorithmus nicht unterstützt."),
    "7.7": ("Message integrity failure.", "Integrität der Nachricht verletzt."),
    "7.8": ("Authentication credentials invalid.", "Zugangsdaten ungültig."),
    "7.9": ("Authentication mechanism is too weak.", "Anmeldeverfahren zu schwach."),
    "7.10": ("Encryption needed.", "Verschlüsselung erforderlich."),
    "7.11": (
        "Encryption required for the requested authentication mechanism.",
        "Verschlüsselung für das Anmeldeverfahren erforderlich.",
    ),
    "7.12": ("A password transition is needed.", "Passwortwechsel erforderlich."),
    "7.13": ("User account disabled.", "Benutzerkonto deaktiviert."),
    "7.14": ("Trust relationship required.", "Vertrauensbeziehung erforderlich."),
    "7.15": ("Priority level is too low.", "Priorität zu niedrig."),
    "7.16": ("Message is too big for the specified priority.", "Nachricht zu groß für die angegebene Priorität."),
    "7.17": ("Mailbox owner has changed.", "Inhaber des Postfachs hat gewechselt."),
    "7.18": ("Domain owner has changed.", "Inhaber der Domain hat gewechselt."),
    "7.19": ("RRVS test cannot be completed.", "RRVS-Prüfung nicht möglich."),
    "7.20": ("No passing DKIM signature found.", "Keine gültige DKIM-Signatur gefunden."),
    "7.21": ("No acceptable DKIM signature found.", "Keine annehmbare DKIM-Signatur gefunden."),
    "7.22": (
        "No valid author-matched DKIM signature found.",
        "Keine gültige, zum Absender passende DKIM-Signatur gefunden.",
    ),
    "7.23": (
        "SPF validation failed: the sending server is not allowed to send for the sender's domain.",
        "SPF-Prüfung fehlgeschlagen: der sendende Server darf für die Absenderdomain nicht senden.",
    ),
    "7.24": ("SPF validation error.", "Fehler bei der SPF-Prüfung."),
    "7.25": (
        "Reverse DNS validation failed: the sending server's address has no matching reverse DNS name.",
        "Reverse-DNS-Prüfung fehlgeschlagen: die Adresse des sendenden Servers hat keinen passenden Reverse-DNS-Namen.",
    ),
    "7.26": ("Multiple authentication checks failed.", "Mehrere Authentifizierungsprüfungen fehlgeschlagen."),
    "7.27": (
        "Sender address has a null MX: the sender's domain accepts no mail.",
        "Absenderdomain hat einen Null-MX: sie nimmt keine Mails an.",
    ),
    "7.28": ("Mail flood detected.", "Mailflut erkannt."),
    "7.29": ("ARC validation failure.", "ARC-Prüfung fehlgeschlagen."),
    "7.30": ("REQUIRETLS support required.", "REQUIRETLS-Unterstützung erforderlich."),
}


def explain(code: str, lang: Lang) -> list[str]:
    """Plain sentences for an enhanced status code: class, subject, detail (when registered)."""
    found = replycodes.parts(code.strip())
    if found is None:
        return []
    klass, subject, detail = found
    index = 1 if lang == "de" else 0
    sentences = [CLASSES[klass][index]]
    if subject in SUBJECTS:
        sentences.append(SUBJECTS[subject][index])
    registered = DETAILS.get(f"{subject}.{int(detail)}")
    if registered is not None:
        sentences.append(registered[index])
    return sentences
