"""The pages' own words in English and German, and which language a request gets.

Labels the reports share (status, who must act, timeline, ...) come from trace/phrases.py, so a
page and the report downloaded from it say the same. The language is, in this order: `?lang=`
(the switch on every page, then remembered in a cookie), the cookie, the browser's
Accept-Language, English.
"""

from __future__ import annotations

from typing import Final

from mailwarden.catalog import LANGS, Lang
from mailwarden.trace.phrases import PHRASES, phrase

LANG_COOKIE: Final = "mw_lang"

TEXTS: Final[dict[str, tuple[str, str]]] = {
    "app.title": ("mailwarden tracking center", "mailwarden Nachverfolgung"),
    "nav.search": ("Search", "Suche"),
    "nav.dashboard": ("Dashboard", "Übersicht"),
    "nav.message": ("Open a ref", "Referenz öffnen"),
    "nav.bounce": ("Explain a bounce", "Fehlermeldung erklären"),
    "nav.sender": ("Check a sender", "Absender prüfen"),
    "nav.audit": ("Audit log", "Protokoll"),
    "nav.accounts": ("Accounts", "Konten"),
    "nav.logout": ("Log out", "Abmelden"),
    "nav.language": ("Language", "Sprache"),
    "login.title": ("Log in", "Anmelden"),
    "login.name": ("Account", "Konto"),
    "login.password": ("Password", "Passwort"),
    "login.submit": ("Log in", "Anmelden"),
    "login.failed": ("Account or password is wrong.", "Konto oder Passwort ist falsch."),
    "login.locked": (
        "Too many failed logins. Try again in {minutes} minutes.",
        "Zu viele fehlgeschlagene Anmeldungen. Versuchen Sie es in {minutes} Minuten wieder.",
    ),
    "login.expired": (
        "The form had expired; please log in again.",
        "Das Formular war abgelaufen; bitte melden Sie sich erneut an.",
    ),
    "home.title": ("Find a message", "Nachricht finden"),
    "home.intro": (
        "Enter the reference (ref=…) from a reply or a report, or a trace id such as E123.",
        "Geben Sie die Referenz (ref=…) aus einer Antwort oder einem Bericht ein, oder eine Trace-ID wie E123.",
    ),
    "home.id": ("Reference or trace id", "Referenz oder Trace-ID"),
    "home.recipient": ("Recipient (optional)", "Empfänger (optional)"),
    "home.open": ("Open", "Öffnen"),
    "home.role": ("Logged in as {name} ({role})", "Angemeldet als {name} ({role})"),
    "home.domains": ("Your domains: {domains}", "Ihre Domains: {domains}"),
    "home.search": (
        "To find mail by sender, recipient, time, status or client address, use the search.",
        "Um Mail nach Absender, Empfänger, Zeit, Status oder Client-Adresse zu finden, nutzen Sie die Suche.",
    ),
    "search.title": ("Search", "Suche"),
    "search.sender": ("Sender", "Absender"),
    "search.recipient": ("Recipient", "Empfänger"),
    "search.address_hint": ("a@b.test, @b.test or *part*", "a@b.test, @b.test oder *Teil*"),
    "search.since": ("From", "Von"),
    "search.until": ("Until", "Bis"),
    "search.time_hint": ("30m, 2h, 7d ago or 2026-11-28T10:00 (UTC)", "vor 30m, 2h, 7d oder 2026-11-28T10:00 (UTC)"),
    "search.status": ("Status", "Status"),
    "search.any_status": ("any", "alle"),
    "search.reason": ("Reason code", "Grund-Code"),
    "search.ref": ("Ref", "Referenz"),
    "search.message_id": ("Message-ID", "Message-ID"),
    "search.client": ("Client address or network", "Client-Adresse oder Netz"),
    "search.submit": ("Search", "Suchen"),
    "search.reset": ("New search", "Neue Suche"),
    "search.scope": ("Only mail to your domains: {domains}", "Nur Mail an Ihre Domains: {domains}"),
    "search.found": ("{total} recipient(s) found", "{total} Empfänger gefunden"),
    "search.none": (
        "Nothing found. Widen the period (From/Until) or check the spelling of the addresses.",
        "Nichts gefunden. Erweitern Sie den Zeitraum (Von/Bis) oder prüfen Sie die Schreibweise der Adressen.",
    ),
    "search.by_status": ("By status", "Nach Status"),
    "search.by_reason": ("By reason", "Nach Grund"),
    "search.results": ("Results, newest first", "Ergebnisse, neueste zuerst"),
    "search.time": ("Time (UTC)", "Zeit (UTC)"),
    "search.next": ("Older", "Ältere"),
    "search.previous": ("Newer", "Neuere"),
    "search.bad_address": (
        "{field}: {value!r} is no address (a@b.test), domain (@b.test) or part (*bob*).",
        "{field}: {value!r} ist keine Adresse (a@b.test), Domain (@b.test) oder Teil (*bob*).",
    ),
    "search.bad_time": (
        "{field}: {value!r} is neither a duration like 30m, 2h, 7d nor a time like 2026-11-28T10:00.",
        "{field}: {value!r} ist weder eine Dauer wie 30m, 2h, 7d noch eine Zeit wie 2026-11-28T10:00.",
    ),
    "search.bad_client": (
        "{field}: {value!r} is no address or network (192.0.2.7, 192.0.2.0/24, 2001:db8::/32).",
        "{field}: {value!r} ist keine Adresse und kein Netz (192.0.2.7, 192.0.2.0/24, 2001:db8::/32).",
    ),
    "search.bad_status": ("{field}: {value!r} is no status.", "{field}: {value!r} ist kein Status."),
    "search.bad_cursor": (
        "The page link is damaged; start the search again.",
        "Der Link zur Seite ist beschädigt; beginnen Sie die Suche neu.",
    ),
    "search.cursor": ("Page", "Seite"),
    "search.before": ("Page", "Seite"),
    "state.rejected": ("rejected", "abgelehnt"),
    "state.tempfailed": ("temporarily refused", "vorläufig abgelehnt"),
    "state.accepted": ("accepted", "angenommen"),
    "state.delivered": ("delivered", "zugestellt"),
    "state.junk": ("delivered as junk", "als Junk zugestellt"),
    "state.deferred": ("deferred", "zurückgestellt"),
    "state.bounced": ("bounced", "zurückgeschickt"),
    "state.retrieved": ("fetched", "abgerufen"),
    "state.deleted": ("fetched and deleted", "abgerufen und gelöscht"),
    "dashboard.title": ("Dashboard", "Übersicht"),
    "dashboard.intro": (
        "Recipients of the messages that arrived, by outcome and by reason. Times are UTC days; "
        "click a bar to see its messages.",
        "Empfänger der eingegangenen Nachrichten, nach Ergebnis und nach Grund. Tage in UTC; "
        "ein Klick auf einen Balken zeigt seine Nachrichten.",
    ),
    "dashboard.today": ("Today", "Heute"),
    "dashboard.month": ("Last 30 days", "Letzte 30 Tage"),
    "dashboard.by_status": ("By outcome", "Nach Ergebnis"),
    "dashboard.by_reason": ("By reason", "Nach Grund"),
    "dashboard.by_day": ("Per day, by outcome", "Pro Tag, nach Ergebnis"),
    "dashboard.total": ("{total} recipient(s)", "{total} Empfänger"),
    "dashboard.nothing": ("No mail in this period.", "Keine Mail in diesem Zeitraum."),
    "dashboard.no_reason": ("(no reason)", "(ohne Grund)"),
    "dashboard.numbers": ("The numbers", "Die Zahlen"),
    "dashboard.day": ("Day", "Tag"),
    "dashboard.count": ("Recipients", "Empfänger"),
    "dashboard.fresh": (
        "Today's counts are at most a minute old, those of earlier days at most ten minutes.",
        "Die Zahlen von heute sind höchstens eine Minute alt, die früherer Tage höchstens zehn Minuten.",
    ),
    "dashboard.search": ("Search these messages", "Diese Nachrichten suchen"),
    "message.recipients": ("Recipients", "Empfänger"),
    "message.reason": ("Reason code", "Grund-Code"),
    "message.downloads": ("Download the report", "Bericht herunterladen"),
    "message.phases": ("Course", "Verlauf"),
    "phase.received": ("Received", "Empfangen"),
    "phase.checks": ("Checks", "Prüfungen"),
    "phase.decision": ("Decision", "Entscheidung"),
    "phase.delivered": ("Delivered", "Zugestellt"),
    "phase.fetched": ("Fetched / deleted", "Abgerufen / gelöscht"),
    "timeline.node": ("node", "Knoten"),
    "timeline.by": ("by", "durch"),
    "notfound.title": ("Not found", "Nicht gefunden"),
    "notfound.text": (
        "There is no such message, or it is not one you may see.",
        "Diese Nachricht gibt es nicht, oder Sie dürfen sie nicht sehen.",
    ),
    "error.title": ("Something went wrong", "Etwas ist schiefgegangen"),
    "error.csrf": (
        "The form had expired or did not come from this site. Please reload the page and try again.",
        "Das Formular war abgelaufen oder kam nicht von dieser Seite. Bitte laden Sie die Seite neu und versuchen Sie es erneut.",
    ),
    "error.forbidden": ("Only administrators may open this page.", "Nur Administratoren dürfen diese Seite öffnen."),
    "error.too_many": (
        "Too many requests from your address. Please wait a minute.",
        "Zu viele Anfragen von Ihrer Adresse. Bitte warten Sie eine Minute.",
    ),
    "bounce.intro": (
        "Paste a bounce (the error message a sender received) to have it explained.",
        "Fügen Sie eine Fehlermeldung ein, die ein Absender erhalten hat, um sie erklären zu lassen.",
    ),
    "bounce.text": ("The bounce, with its headers if you have them", "Die Fehlermeldung, wenn möglich mit Kopfzeilen"),
    "bounce.submit": ("Explain", "Erklären"),
    "bounce.open": ("Open the message", "Nachricht öffnen"),
    "sender.intro": (
        "Check a sending domain or server address as our gateway sees it: MX, reverse DNS, SPF, DNS lists.",
        "Prüfen Sie eine Absenderdomain oder Serveradresse so, wie unser Gateway sie sieht: MX, Reverse DNS, SPF, DNS-Listen.",
    ),
    "sender.target": ("Domain or IP address", "Domain oder IP-Adresse"),
    "sender.submit": ("Check", "Prüfen"),
    "sender.ok": (
        "No problems found: our mail servers would accept mail from here.",
        "Keine Probleme gefunden: unsere Mailserver würden Mail von hier annehmen.",
    ),
    "sender.problems": (
        "{count} problem(s); our mail servers would answer:",
        "{count} Problem(e); unsere Mailserver würden antworten:",
    ),
    "sender.checked": ("Checked by {by} at {at}", "Geprüft von {by} am {at}"),
    "sender.details": ("Details (as the check recorded them)", "Einzelheiten (wie die Prüfung sie erfasst hat)"),
    "audit.title": ("Audit log", "Protokoll"),
    "audit.time": ("Time (UTC)", "Zeit (UTC)"),
    "audit.account": ("Account", "Konto"),
    "audit.action": ("Action", "Aktion"),
    "audit.target": ("What", "Was"),
    "audit.client": ("From", "Von"),
    "audit.older": ("Older entries", "Ältere Einträge"),
    "accounts.title": ("Accounts", "Konten"),
    "accounts.role": ("Role", "Rolle"),
    "accounts.domains": ("Domains (customers)", "Domains (Kunden)"),
    "accounts.created": ("Created", "Angelegt"),
    "accounts.add": ("Add an account", "Konto anlegen"),
    "accounts.remove": ("Remove", "Entfernen"),
    "accounts.added": ("Account {name} added.", "Konto {name} angelegt."),
    "accounts.removed": ("Account {name} removed.", "Konto {name} entfernt."),
    "accounts.domains_hint": ("comma-separated, customers only", "durch Kommas getrennt, nur für Kunden"),
    "why.title": ("Why was my message refused?", "Warum wurde meine Nachricht abgelehnt?"),
    "why.none": ("No such reference", "Keine solche Referenz"),
    "why.none_text": (
        "We have no refusal with this reference. Check that you copied the reference (12 characters after ref=) "
        "completely from the error message.",
        "Wir haben keine Ablehnung mit dieser Referenz. Prüfen Sie, ob Sie die Referenz (12 Zeichen nach ref=) "
        "vollständig aus der Fehlermeldung übernommen haben.",
    ),
    "why.reference": ("Reference", "Referenz"),
    "why.when": ("When", "Wann"),
    "why.client": ("Your server's address", "Adresse Ihres Servers"),
    "why.reply": ("Our reply", "Unsere Antwort"),
    "why.cause": ("Why", "Warum"),
    "why.temporary": (
        "This was a temporary refusal: your server retries by itself.",
        "Das war eine vorübergehende Ablehnung: Ihr Server versucht es selbst erneut.",
    ),
}


def t(key: str, lang: Lang, **values: object) -> str:
    """A page's sentence, or one of the reports' phrases."""
    if key in TEXTS:
        english, german = TEXTS[key]
        text = german if lang == "de" else english
        return text.format(**values) if values else text
    if key in PHRASES:
        return phrase(key, lang, **values)
    raise KeyError(f"no text {key!r}")


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> tuple[Lang, bool]:
    """The request's language, and whether it was chosen now (then the cookie remembers it)."""
    if query in LANGS:
        return _lang(query), True
    if cookie in LANGS:
        return _lang(cookie), False
    return from_accept_language(accept_language or ""), False


def from_accept_language(header: str) -> Lang:
    """The best of our languages by the browser's q-values; English when it names neither."""
    best: tuple[float, Lang] = (0.0, "en")
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and quality > best[0] and 0 < quality <= 1:
            best = (quality - position * 1e-6, _lang(primary))
    return best[1]


def _lang(value: str | None) -> Lang:
    return "de" if value == "de" else "en"
