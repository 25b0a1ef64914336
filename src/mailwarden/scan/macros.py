"""Office macros: olevba extracts the VBA code, mraptor judges it, with three measured pitfalls handled.

1. olevba treats any text as VBA source (a 100 kB text part "had macros" and cost 318 ms), so
   only files whose magic says OLE2, OOXML/ZIP, Word 2003 XML / Flat OPC or MHT are handed to it.
2. Files encrypted with Excel's default password "VelvetSweatshop" are not decrypted in memory by
   olevba; they are decrypted here with msoffcrypto-tool first. Other passwords cannot be opened:
   that is noted, not judged.
3. Excel 4 (XLM) macro sheets in .xlsm files (`xl/macrosheets/`) are missed; the ZIP listing is
   checked for them directly.

A document is reported when mraptor calls its macros suspicious (auto-executing and writing or
executing something) or when it carries an Excel 4 macro sheet.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass, replace
from typing import Final

OLE_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
DEFAULT_PASSWORD: Final = "VelvetSweatshop"

# olevba logs every oddity of a broken file at WARNING/ERROR; those are the sender's files, not our errors.
logging.getLogger("olevba").setLevel(logging.CRITICAL)
logging.getLogger("olefile").setLevel(logging.CRITICAL)
logging.getLogger("msoffcrypto").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class MacroReport:
    filename: str
    suspicious: bool
    summary: str  # e.g. "AutoOpen runs Shell" or "Excel 4 macro sheet"
    flags: str = ""  # mraptor's A/W/X
    keywords: tuple[str, ...] = ()
    note: str | None = None  # e.g. encrypted with an unknown password


def office_kind(data: bytes) -> str | None:
    """Which Office container the magic bytes show, or None for anything olevba must not see."""
    if data[:8] == OLE_MAGIC:
        return "ole"
    if data[:4] == b"PK\x03\x04":
        return "ooxml" if _zip_has(data, "[Content_Types].xml") else None
    head = data[:4096].lstrip()
    if _office_xml(head):
        return "xml"
    if _mht(head) and b"QWN0aXZlTWltZQ" in data[:1_000_000]:
        return "mht"
    return None


def may_be_office(head: bytes) -> bool:
    """Whether a file beginning with `head` could be an Office document; errs towards yes.

    `office_kind` needs the whole file (an OOXML package's listing, an MHT's ActiveMime part
    anywhere in its first megabyte); this needs only the first bytes, for files too large to read.
    """
    start = head[:4096].lstrip()
    return head[:8] == OLE_MAGIC or head[:4] == b"PK\x03\x04" or _office_xml(start) or _mht(start)


def _office_xml(head: bytes) -> bool:
    return head.startswith(b"<?xml") and (
        b"schemas.microsoft.com/office/word/2003/wordml" in head or b"<pkg:package" in head
    )


def _mht(head: bytes) -> bool:
    return head[:12].upper().startswith(b"MIME-VERSION")


def _zip_has(data: bytes, name: str) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return name in archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return False


def _macro_sheets(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [n for n in archive.namelist() if n.lower().startswith(("xl/macrosheets/", "xl/xlmacros/"))]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return []


def _decrypt(data: bytes) -> bytes | None:
    """The document decrypted with the default password, or None if that password does not open it."""
    import msoffcrypto
    from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        if not office.is_encrypted():
            return data
        office.load_key(password=DEFAULT_PASSWORD)
        plain = io.BytesIO()
        office.decrypt(plain)
    except (DecryptionError, FileFormatError, InvalidKeyError, ValueError, KeyError, AssertionError, OSError):
        return None
    return plain.getvalue()


def _is_encrypted(data: bytes) -> bool:
    import olefile
    from oletools import crypto

    try:
        return bool(crypto.is_encrypted(olefile.OleFileIO(data)))
    except Exception:  # a broken OLE file is not an encrypted one
        return False


def inspect(filename: str, data: bytes) -> MacroReport | None:
    """Look for macros in one file; None when it is no Office document or has no macros."""
    kind = office_kind(data)
    if kind is None:
        return None
    note = None
    if kind == "ole" and _is_encrypted(data):
        plain = _decrypt(data)
        if plain is None:
            return MacroReport(filename, False, "encrypted document", note="encrypted with a password; not inspected")
        data, kind = plain, office_kind(plain) or kind
        note = f"decrypted with the default password {DEFAULT_PASSWORD!r}"
    sheets = _macro_sheets(data) if kind == "ooxml" else []
    if sheets:
        return MacroReport(filename, True, "Excel 4 macro sheet", "A", (sheets[0],), note)
    vba = _vba(filename, data)
    return vba if vba is None or note is None else replace(vba, note=note)


def _vba(filename: str, data: bytes) -> MacroReport | None:
    from oletools import mraptor
    from oletools.olevba import VBA_Parser

    parser = VBA_Parser(filename, data=data, relaxed=True)
    try:
        if not parser.detect_vba_macros():
            return None
        code = parser.get_vba_code_all_modules()
        raptor = mraptor.MacroRaptor(code)
        raptor.scan()
        findings = parser.analyze_macros() or []
    finally:
        parser.close()
    autoexec = [keyword for kind, keyword, _ in findings if kind == "AutoExec"]
    suspicious = [keyword for kind, keyword, _ in findings if kind == "Suspicious"]
    parts = []
    if autoexec:
        parts.append(f"{', '.join(autoexec[:3])} runs automatically")
    if suspicious:
        parts.append(f"uses {', '.join(suspicious[:3])}")
    summary = "; ".join(parts) or "VBA macro"
    return MacroReport(
        filename, bool(raptor.suspicious), summary, raptor.get_flags(), tuple(dict.fromkeys(autoexec + suspicious))
    )
