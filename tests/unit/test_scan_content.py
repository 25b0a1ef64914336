"""What the content inspection finds in stranger-made messages: files, dangers, macros, and bad input.

Runs the worker-side code directly (no processes); the Office files come from tests/support/office.py.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from email.message import EmailMessage

import pytest

from mailwarden.scan.attachments import ArchiveLimits, by_content, by_name, extension
from mailwarden.scan.content import ContentLimits, ContentReport, inspect_message, triage
from mailwarden.scan.macros import office_kind
from mailwarden.scan.mime import Walk, decode, might_carry_files
from tests.support import archives, office

LIMITS = ContentLimits()
PE = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 64


def mail(**files: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "a@sender.test"
    message["Subject"] = "files"
    message.set_content("see attachments\n")
    for name, data in files.items():
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name.replace("_", "."))
    return message.as_bytes()


def zipped(**members: bytes) -> bytes:
    return archives.zip_of((name.replace("_", "."), data) for name, data in members.items())


def zipped_pairs(members: list[tuple[str, bytes]]) -> bytes:
    return archives.zip_of(members)


# ---------------------------------------------------------------------------- dangerous files
@pytest.mark.parametrize(
    "name", ["setup.exe", "INVOICE.PDF.SCR", "run.js", "x.vbs", "a.hta", "disk.iso", "link.lnk", "f.exe. "]
)
def test_dangerous_extensions_are_found_by_name_whatever_the_case_or_trailing_dots(name: str) -> None:
    assert by_name(name, LIMITS.dangerous_extensions) is not None


def test_harmless_names_are_not_dangerous() -> None:
    assert by_name("report.pdf", LIMITS.dangerous_extensions) is None
    assert by_name("noextension", LIMITS.dangerous_extensions) is None
    assert extension("dir\\evil.exe") == "exe"


def test_programs_are_recognized_by_their_bytes_not_their_name() -> None:
    assert by_content(PE) == "Windows program (PE executable)"
    assert by_content(b"\x7fELF\x02\x01") == "Linux program (ELF executable)"
    assert by_content(b"\0" * 0x8001 + b"CD001") == "disk image (ISO 9660)"
    assert by_content(b"MZ but nothing else") is None
    report = inspect_message(mail(invoice_pdf=PE), LIMITS)
    assert [(d.filename, d.filetype) for d in report.dangerous] == [("invoice.pdf", "Windows program (PE executable)")]


def test_exe_inside_nested_zips_is_found_with_its_path() -> None:
    inner = zipped(tool_exe=b"not even a program")
    report = inspect_message(mail(outer_zip=zipped(inner_zip=inner)), LIMITS)
    assert [d.filename for d in report.dangerous] == ["outer.zip/inner.zip/tool.exe"]


def test_a_compression_bomb_is_dangerous_and_is_not_unpacked() -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros", "w", force_zip64=True) as member,
    ):
        for _ in range(64):
            member.write(b"\0" * (1024 * 1024))
    report = inspect_message(mail(bomb_zip=buffer.getvalue()), LIMITS)
    assert [d.filetype.split(" (")[0] for d in report.dangerous] == ["compression bomb"]


def test_broken_and_encrypted_zips_are_noted_not_fatal() -> None:
    report = inspect_message(mail(broken_zip=b"PK\x03\x04" + b"\xff" * 100), LIMITS)
    assert any("unreadable ZIP archive" in p for p in report.problems)
    report = inspect_message(mail(secret_zip=archives.encrypted(zipped(notes_txt=b"hello\n"))), LIMITS)
    assert report.problems == ["secret.zip/notes.txt: encrypted archive member (not inspected)"]


def test_a_member_with_a_corrupt_deflate_stream_is_noted_not_fatal() -> None:
    archive = bytearray(zipped(log_txt=b"hello world " * 1000))
    start = archive.index(b"log.txt") + len(b"log.txt")
    archive[start + 5 : start + 15] = b"\xff" * 10
    report = inspect_message(mail(log_zip=bytes(archive)), LIMITS)
    assert any(p.startswith("log.zip/log.txt: unreadable archive member") for p in report.problems)


# ---------------------------------------------------------------------------- what the bounds keep us out of
def gaps(report: ContentReport) -> list[tuple[str, str]]:
    return [(gap.path, gap.cause) for gap in report.uninspected]


def test_zeros_just_under_the_bomb_threshold_no_longer_use_up_the_budget_before_the_inner_zip() -> None:
    """Issue 11.3 (a): 17 x 16 MiB of zeros and then inner.zip; only the heads of the zeros are unpacked."""
    archive = archives.zeros_then(17, archives.JUST_UNDER_BOMB, [("inner.zip", zipped(evil_exe=b"x"))])
    report = inspect_message(mail(big_zip=archive), LIMITS)
    assert [d.filename for d in report.dangerous] == ["big.zip/inner.zip/evil.exe"]
    assert report.uninspected == []


def test_archives_that_do_not_fit_in_the_budget_are_uninspected_and_smaller_ones_still_opened() -> None:
    limits = replace(LIMITS, archive=ArchiveLimits(total=1024 * 1024))
    parts = [(f"part{n}.zip", archives.stored_zeros(512 * 1024)) for n in range(3)]
    archive = zipped_pairs([*parts, ("inner.zip", zipped(evil_pdf=archives.PE_PROGRAM))])
    report = inspect_message(mail(big_zip=archive), limits)
    assert gaps(report) == [("big.zip/part1.zip", "budget"), ("big.zip/part2.zip", "budget")]
    assert report.uninspected[0].limit == "it does not fit into the 1 MiB we unpack per message at most"
    assert [d.filename for d in report.dangerous] == ["big.zip/inner.zip/evil.pdf"]


def test_once_the_budget_is_used_up_no_member_is_read_and_each_is_uninspected() -> None:
    limits = replace(LIMITS, archive=ArchiveLimits(total=100 * 1024))
    noise = bytes(range(256)) * 1024
    archive = zipped_pairs([("a.bin", noise), ("b.bin", noise), ("c.zip", zipped(evil_pdf=b"x")), ("d.txt", b"hi")])
    report = inspect_message(mail(big_zip=archive), limits)
    assert gaps(report) == [("big.zip/c.zip", "budget"), ("big.zip/d.txt", "budget")]


def test_names_past_the_member_limit_are_still_checked_and_the_archive_is_uninspected() -> None:
    """Issue 11.3 (b): evil.exe as the 1,001st member."""
    report = inspect_message(mail(many_zip=archives.many(1000, [("evil.exe", b"x")])), LIMITS)
    assert [d.filename for d in report.dangerous] == ["many.zip/evil.exe"]
    assert gaps(report) == [("many.zip", "members")]
    assert report.uninspected[0].limit == "it holds 1001 files, more than the 1000 we open per archive"


def test_a_disguised_program_past_the_member_limit_leaves_the_archive_uninspected() -> None:
    report = inspect_message(mail(many_zip=archives.many(1000, [("evil.pdf", archives.PE_PROGRAM)])), LIMITS)
    assert report.dangerous == []
    assert gaps(report) == [("many.zip", "members")]


def test_archives_nested_deeper_than_the_limit_are_uninspected() -> None:
    data = zipped(payload_exe=b"x")
    for level in range(5):
        data = zipped(**{f"level{level}_zip": data})
    report = inspect_message(mail(deep_zip=data), LIMITS)
    assert report.dangerous == []
    assert gaps(report) == [("deep.zip/level4.zip/level3.zip/level2.zip", "depth")]
    assert report.uninspected[0].limit == "it is an archive at nesting level 4; we open 3 levels"


def test_an_archive_inside_larger_than_the_member_limit_is_uninspected_but_a_large_file_is_judged_by_its_head() -> None:
    limits = replace(LIMITS, archive=ArchiveLimits(member_size=1024 * 1024))
    big_program = archives.PE_PROGRAM + bytes(2 * 1024 * 1024)
    archive = zipped_pairs([("inner.zip", archives.stored_zeros(2 * 1024 * 1024)), ("movie.mp4", big_program)])
    report = inspect_message(mail(big_zip=archive), limits)
    assert gaps(report) == [("big.zip/inner.zip", "size")]
    assert [(d.filename, d.filetype) for d in report.dangerous] == [
        ("big.zip/movie.mp4", "Windows program (PE executable)")
    ]


def test_large_files_in_an_archive_cost_only_their_heads() -> None:
    limits = replace(LIMITS, archive=ArchiveLimits(total=1024 * 1024))
    archive = zipped_pairs([(f"table{n}.csv", b"1,2,3\n" * 400_000) for n in range(8)])  # 8 x 2.4 MB
    report = inspect_message(mail(tables_zip=archive), limits)
    assert (report.uninspected, report.dangerous, report.problems) == ([], [], [])


# ---------------------------------------------------------------------------- macros
@pytest.mark.parametrize(
    ("name", "build"),
    [("a.doc", office.word_doc), ("a.docm", office.word_docm), ("a.xlsm", office.excel_xlsm)],
)
def test_generated_macro_documents_are_flagged_by_olevba_and_mraptor(name: str, build: object) -> None:
    assert callable(build)
    report = inspect_message(mail(**{name.replace(".", "_"): build()}), LIMITS)
    (macro,) = report.macros
    assert macro.suspicious
    assert "AutoOpen" in macro.keywords and "Shell" in macro.keywords
    assert macro.flags == "A-X"


def test_default_password_documents_are_decrypted_before_olevba_looks() -> None:
    (macro,) = inspect_message(mail(book_xlsm=office.encrypted_xlsm()), LIMITS).macros
    assert macro.suspicious
    assert macro.note == "decrypted with the default password 'VelvetSweatshop'"


def test_documents_with_another_password_are_noted_not_judged() -> None:
    (macro,) = inspect_message(mail(book_xlsm=office.encrypted_xlsm("secret")), LIMITS).macros
    assert not macro.suspicious
    assert macro.note == "encrypted with a password; not inspected"


def test_excel4_macro_sheets_are_flagged_although_olevba_misses_them() -> None:
    (macro,) = inspect_message(mail(book_xlsm=office.excel_xlm()), LIMITS).macros
    assert macro.suspicious and macro.summary == "Excel 4 macro sheet"


def test_plain_text_never_reaches_olevba() -> None:
    vba_looking_text = b'Sub AutoOpen()\r\n Shell "cmd"\r\nEnd Sub\r\n' * 100
    assert office_kind(vba_looking_text) is None
    assert inspect_message(mail(notes_txt=vba_looking_text), LIMITS).macros == []


def test_a_clean_docx_has_no_findings() -> None:
    report = inspect_message(mail(minutes_docx=office.clean_docx()), LIMITS)
    assert (report.dangerous, report.macros, report.problems) == ([], [], [])
    assert report.attachments == ["minutes.docx"]


def test_a_corrupt_office_file_is_noted_not_fatal() -> None:
    broken = office.word_doc()[:3000]
    report = inspect_message(mail(cut_doc=broken), LIMITS)
    assert (report.macros, report.dangerous) == ([], [])
    assert [p.partition(" (")[0] for p in report.problems] == ["cut.doc: Office document could not be analysed"]


# ---------------------------------------------------------------------------- the MIME walk
def test_nesting_beyond_the_limit_is_reported_as_too_complex() -> None:
    depth = 3000
    body = "".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(depth))
    raw = f"Content-Type: multipart/mixed; boundary=b0\r\n\r\n{body}".encode()
    report = inspect_message(raw, LIMITS)
    assert report.structure_exceeded == "MIME parts nested deeper than 20 levels"


def test_too_many_parts_are_reported_as_too_complex() -> None:
    parts = "".join("--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n" for _ in range(2000))
    raw = f"Content-Type: multipart/mixed; boundary=x\r\n\r\n{parts}--x--\r\n".encode()
    assert inspect_message(raw, LIMITS).structure_exceeded == "more than 1000 MIME parts"


def test_a_boundary_that_only_starts_another_line_does_not_split_the_part() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\nContent-Type: text/plain\r\n\r\n"
        b"--abc is not our boundary\r\n--ab--\r\n"
    )
    (leaf,) = list(Walk(raw, 20, 100).leaves())
    assert raw[leaf.start : leaf.end] == b"--abc is not our boundary"


def test_missing_closing_boundary_and_missing_boundary_parameter_are_noted() -> None:
    walk = Walk(b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nbody without end", 20, 100)
    assert len(list(walk.leaves())) == 1
    assert "multipart without its closing boundary" in walk.problems
    walk = Walk(b"Content-Type: multipart/mixed\r\n\r\nno boundary at all", 20, 100)
    assert len(list(walk.leaves())) == 1
    assert "multipart without a usable boundary" in walk.problems


def test_broken_base64_decodes_as_far_as_it_can() -> None:
    raw = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQ*!AAMA\r\nA"
    (leaf,) = list(Walk(raw, 20, 100).leaves())
    data, problem = decode(raw, leaf, 1000)
    assert data.startswith(b"MZ")
    assert problem == "broken base64 (decoded as far as possible)"


def test_undecodable_rfc2231_filenames_do_not_break_the_walk() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
        b"Content-Disposition: attachment; filename*=bogus''%ZZ%\xff.exe\r\n\r\nx\r\n--z--\r\n"
    )
    report = inspect_message(raw, LIMITS)
    assert report.parts == 2


def test_plain_text_mail_skips_the_file_inspection_and_small_mail_is_triaged_in_process() -> None:
    assert not might_carry_files(b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nhello")
    assert might_carry_files(b"Content-Type: text/plain; name=run.vbs\r\n\r\nx")
    assert triage(mail(a_pdf=b"%PDF-1.4"), LIMITS) is not None
    assert triage(mail(a_zip=zipped(a_txt=b"x")), LIMITS) is None  # archives go to a worker
    assert triage(mail(a_docm=office.word_docm()), LIMITS) is None


def test_the_light_pass_sees_magic_bytes_in_the_head_of_large_attachments() -> None:
    iso = b"\0" * 0x8001 + b"CD001" + bytes(range(256)) * 2000  # ~550 kB: only its head is decoded
    report = triage(mail(photos_img_pdf=iso), LIMITS)
    assert report is not None
    assert [(d.filename, d.filetype) for d in report.dangerous] == [("photos.img.pdf", "disk image (ISO 9660)")]
    assert report.problems == []
    big_zip = zipped(data_bin=bytes(range(256)) * 4000)
    assert triage(mail(big_zip=big_zip), LIMITS) is None
