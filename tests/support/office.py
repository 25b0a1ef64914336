"""Build Office test documents with an auto-running VBA macro, from nothing but the specifications.

oletools' own sample files are not on this machine and no Office program is, so the macro fixtures
are written here byte by byte:

- `cfb(tree)`: an OLE2 compound file (MS-CFB, version 3, 512-byte sectors, small streams in the
  mini stream), from a nested dict of storages (dict) and streams (bytes).
- `vba_storage(source)`: a VBA project (MS-OVBA 2.3): the PROJECT stream, VBA/_VBA_PROJECT,
  the compressed VBA/dir stream describing one standard module, and the module stream holding
  the compressed source. The compression uses literal tokens and raw chunks only, which
  MS-OVBA 2.4.1 allows and every decompressor must read.
- `word_doc()`: a Word 97-2003 .doc: WordDocument/1Table streams plus the project in `Macros/`.
- `word_docm()` / `excel_xlsm()`: Office Open XML zips with `word/vbaProject.bin`
  (`xl/vbaProject.bin`); `excel_xlm()` an .xlsm with an Excel 4 macro sheet (xl/macrosheets/).
- `encrypted_xlsm()`: a macro workbook encrypted with Excel's default password "VelvetSweatshop".

The macro (`AUTO_MACRO`) runs on open (AutoOpen / Workbook_Open) and calls Shell, so
olevba reports AutoExec + Suspicious and mraptor flags it (A and X). It only echoes a string.
`python -m tests.support.office DIR` writes every fixture into DIR for a look with olevba.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zipfile
from pathlib import Path
from typing import Union

Tree = dict[str, Union[bytes, "Tree"]]

AUTO_MACRO = (
    'Attribute VB_Name = "AutoMod"\r\n'
    "Sub AutoOpen()\r\n"
    '    Shell "cmd.exe /c echo mailwarden-test-fixture", vbHide\r\n'
    "End Sub\r\n"
    "Sub Workbook_Open()\r\n"
    "    AutoOpen\r\n"
    "End Sub\r\n"
)

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREESECT, ENDOFCHAIN, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


# ---------------------------------------------------------------------------- MS-OVBA compression
def ovba_compress(data: bytes) -> bytes:
    """A CompressedContainer: full 4096-byte chunks stored raw, the rest as literal tokens."""
    out = bytearray(b"\x01")
    for start in range(0, len(data), 4096):
        piece = data[start : start + 4096]
        if len(piece) == 4096:
            out += struct.pack("<H", 0x3000 | (4098 - 3)) + piece  # flag 0: uncompressed chunk
            continue
        body = bytearray()
        for token in range(0, len(piece), 8):
            body += b"\x00" + piece[token : token + 8]  # flag byte 0: eight literal tokens
        out += struct.pack("<H", 0xB000 | (len(body) + 2 - 3)) + body
    return bytes(out)


def _record(record_id: int, payload: bytes) -> bytes:
    return struct.pack("<HI", record_id, len(payload)) + payload


def _dir_stream(module: str, project: str = "Project") -> bytes:
    name, uname = module.encode("cp1252"), module.encode("utf-16-le")
    out = b"".join(
        [
            _record(0x0001, struct.pack("<I", 1)),  # PROJECTSYSKIND: 32-bit Windows
            _record(0x0002, struct.pack("<I", 0x409)),  # PROJECTLCID
            _record(0x0014, struct.pack("<I", 0x409)),  # PROJECTLCIDINVOKE
            _record(0x0003, struct.pack("<H", 1252)),  # PROJECTCODEPAGE
            _record(0x0004, project.encode("cp1252")),  # PROJECTNAME
            _record(0x0005, b"") + _record(0x0040, b""),  # PROJECTDOCSTRING (+ unicode)
            _record(0x0006, b"") + _record(0x003D, b""),  # PROJECTHELPFILEPATH (1 and 2)
            _record(0x0007, struct.pack("<I", 0)),  # PROJECTHELPCONTEXT
            _record(0x0008, struct.pack("<I", 0)),  # PROJECTLIBFLAGS
            struct.pack("<HIIH", 0x0009, 4, 1, 0),  # PROJECTVERSION
            _record(0x000C, b"") + _record(0x003C, b""),  # PROJECTCONSTANTS (+ unicode)
            _record(0x000F, struct.pack("<H", 1)),  # PROJECTMODULES: one module
            _record(0x0013, struct.pack("<H", 0xFFFF)),  # PROJECTCOOKIE
            _record(0x0019, name),  # MODULENAME
            _record(0x0047, uname),  # MODULENAMEUNICODE
            _record(0x001A, name) + _record(0x0032, uname),  # MODULESTREAMNAME (+ unicode)
            _record(0x001C, b"") + _record(0x0048, b""),  # MODULEDOCSTRING (+ unicode)
            _record(0x0031, struct.pack("<I", 0)),  # MODULEOFFSET: source right at the start
            _record(0x001E, struct.pack("<I", 0)),  # MODULEHELPCONTEXT
            _record(0x002C, struct.pack("<H", 0xFFFF)),  # MODULECOOKIE
            struct.pack("<HI", 0x0021, 0),  # MODULETYPE: procedural module
            struct.pack("<HI", 0x002B, 0),  # module terminator
            struct.pack("<HI", 0x0010, 0),  # dir stream terminator
        ]
    )
    return ovba_compress(out)


def vba_storage(source: str = AUTO_MACRO, module: str = "AutoMod") -> Tree:
    """The streams of a VBA project root (MS-OVBA 2.2.1)."""
    project = f'ID="{{00000000-0000-0000-0000-000000000000}}"\r\nModule={module}\r\nName="Project"\r\n'
    return {
        "PROJECT": project.encode("cp1252"),
        "VBA": {
            "_VBA_PROJECT": bytes([0xCC, 0x61, 0xFF, 0xFF, 0x00, 0x00, 0x00]),
            "dir": _dir_stream(module),
            module: ovba_compress(source.encode("cp1252")),
        },
    }


# ---------------------------------------------------------------------------- MS-CFB writer
class _Entry:
    def __init__(self, name: str, content: bytes | None, children: list[_Entry]) -> None:
        self.name, self.content, self.children = name, content, children
        self.sid = 0
        self.left = self.right = self.child = NOSTREAM
        self.start, self.size = ENDOFCHAIN, 0


def _entries(name: str, node: Tree | bytes) -> _Entry:
    if isinstance(node, bytes):
        return _Entry(name, node, [])
    return _Entry(name, None, [_entries(k, v) for k, v in node.items()])


def _balanced(children: list[_Entry]) -> int:
    """Siblings form a binary search tree ordered by (name length, upper-case name)."""
    if not children:
        return NOSTREAM
    middle = len(children) // 2
    node = children[middle]
    node.left = _balanced(children[:middle])
    node.right = _balanced(children[middle + 1 :])
    return node.sid


def _chain(fat: list[int], first: int, count: int) -> None:
    for index in range(first, first + count):
        fat[index] = index + 1 if index < first + count - 1 else ENDOFCHAIN


def cfb(tree: Tree) -> bytes:
    """An OLE2 compound file holding `tree` (storages are dicts, streams bytes)."""
    root = _entries("Root Entry", tree)
    flat: list[_Entry] = []

    def number(entry: _Entry) -> None:
        entry.sid = len(flat)
        flat.append(entry)
        for child in entry.children:
            number(child)

    number(root)
    for entry in flat:
        if entry.content is None:
            ordered = sorted(entry.children, key=lambda e: (len(e.name), e.name.upper()))
            entry.child = _balanced(ordered)

    mini = bytearray()
    minifat: list[int] = []
    big: list[_Entry] = []
    for entry in flat[1:]:
        if entry.content is None:
            continue
        entry.size = len(entry.content)
        if entry.size == 0:
            continue
        if entry.size < MINI_CUTOFF:
            entry.start = len(minifat)
            count = -(-entry.size // MINI_SECTOR)
            minifat.extend([0] * count)
            _chain(minifat, entry.start, count)
            mini += entry.content.ljust(count * MINI_SECTOR, b"\0")
        else:
            big.append(entry)

    def sectors(size: int) -> int:
        return -(-size // SECTOR)

    plan: list[tuple[bytes, int]] = []  # (data, sector count) in file order
    for entry in big:
        assert entry.content is not None
        plan.append((entry.content, sectors(entry.size)))
    mini_count = sectors(len(mini))
    minifat_bytes = b"".join(struct.pack("<I", v) for v in minifat)
    minifat_count = sectors(len(minifat_bytes))
    dir_count = sectors(len(flat) * 128)
    used = sum(count for _, count in plan) + mini_count + minifat_count + dir_count
    fat_count = 1
    while fat_count * (SECTOR // 4) < used + fat_count:
        fat_count += 1
    fat = [FREESECT] * (fat_count * (SECTOR // 4))
    position = 0
    for entry, (_, count) in zip(big, plan, strict=True):
        entry.start = position
        _chain(fat, position, count)
        position += count
    root.start, root.size = (position, len(mini)) if mini else (ENDOFCHAIN, 0)
    _chain(fat, position, mini_count)
    position += mini_count
    minifat_start = position if minifat_count else ENDOFCHAIN
    _chain(fat, position, minifat_count)
    position += minifat_count
    dir_start = position
    _chain(fat, position, dir_count)
    position += dir_count
    fat_start = position
    for index in range(fat_count):
        fat[fat_start + index] = FATSECT

    directory = bytearray()
    for entry in flat:
        encoded = entry.name.encode("utf-16-le")
        kind = 5 if entry is root else (1 if entry.content is None else 2)
        directory += encoded.ljust(64, b"\0")
        directory += struct.pack("<HBB", len(encoded) + 2, kind, 1)
        directory += struct.pack("<III", entry.left, entry.right, entry.child)
        directory += b"\0" * 16 + struct.pack("<I", 0) + b"\0" * 16
        directory += struct.pack("<IQ", entry.start, entry.size)
    while len(directory) % SECTOR:  # unused entries
        directory += b"\0" * 68 + struct.pack("<III", NOSTREAM, NOSTREAM, NOSTREAM) + b"\0" * 48

    difat = [fat_start + i for i in range(fat_count)] + [FREESECT] * (109 - fat_count)
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16
    header += struct.pack("<HHHHH", 0x003E, 0x0003, 0xFFFE, 9, 6) + b"\0" * 6
    header += struct.pack(
        "<IIIIIIIII", 0, fat_count, dir_start, 0, MINI_CUTOFF, minifat_start, minifat_count, ENDOFCHAIN, 0
    )
    header += b"".join(struct.pack("<I", v) for v in difat)

    def padded(data: bytes, count: int) -> bytes:
        return data.ljust(count * SECTOR, b"\0")

    body = b"".join(padded(data, count) for data, count in plan)
    body += padded(bytes(mini), mini_count) + padded(minifat_bytes, minifat_count) + bytes(directory)
    body += b"".join(struct.pack("<I", v) for v in fat)
    return header + body


# ---------------------------------------------------------------------------- documents
def word_doc(source: str = AUTO_MACRO) -> bytes:
    """Word 97-2003 with the VBA project in the `Macros` storage."""
    return cfb(
        {
            "WordDocument": b"\xec\xa5\xc1\x00" + b"\0" * 4092,  # a FIB's magic, then padding
            "1Table": b"\0" * 512,
            "Macros": vba_storage(source),
        }
    )


def _ooxml(main_part: str, content_type: str, files: dict[str, bytes]) -> bytes:
    types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
        f'<Override PartName="/{main_part}" ContentType="{content_type}"/></Types>'
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        f'relationships/officeDocument" Target="{main_part}"/></Relationships>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("_rels/.rels", rels)
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def word_docm(source: str = AUTO_MACRO) -> bytes:
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>Invoice</w:t></w:r></w:p></w:body></w:document>"
    )
    return _ooxml(
        "word/document.xml",
        "application/vnd.ms-word.document.macroEnabled.main+xml",
        {"word/document.xml": document.encode(), "word/vbaProject.bin": cfb(vba_storage(source))},
    )


def _workbook(extra: dict[str, bytes]) -> bytes:
    workbook = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets/></workbook>'
    )
    return _ooxml(
        "xl/workbook.xml",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
        {"xl/workbook.xml": workbook.encode(), **extra},
    )


def excel_xlsm(source: str = AUTO_MACRO) -> bytes:
    return _workbook({"xl/vbaProject.bin": cfb(vba_storage(source))})


def excel_xlm() -> bytes:
    """An .xlsm whose only macro is an Excel 4 (XLM) macro sheet - no VBA project at all."""
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<xm:macrosheet xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main">'
        '<sheetData><row r="1"><c r="A1"><f>EXEC("calc.exe")</f></c></row>'
        '<row r="2"><c r="A2"><f>HALT()</f></c></row></sheetData></xm:macrosheet>'
    )
    return _workbook({"xl/macrosheets/sheet1.xml": sheet.encode()})


def encrypted_xlsm(password: str = "VelvetSweatshop") -> bytes:
    """A macro workbook encrypted as Office does; "VelvetSweatshop" is Excel's default password.

    msoffcrypto-tool's writer mishandles packages under 4,096 bytes (they land in the mini
    stream and do not decrypt again), so the workbook carries a 6 kB incompressible part.
    """
    from msoffcrypto.format.ooxml import OOXMLFile

    padding = random.Random(4).randbytes(6000)
    data = _workbook({"xl/vbaProject.bin": cfb(vba_storage()), "docProps/thumbnail.bin": padding})

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(data)).encrypt(password, out)
    return out.getvalue()


def clean_docx() -> bytes:
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>Minutes</w:t></w:r></w:p></w:body></w:document>"
    )
    return _ooxml(
        "word/document.xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        {"word/document.xml": document.encode()},
    )


FIXTURES = {
    "autoopen.doc": word_doc,
    "autoopen.docm": word_docm,
    "autoopen.xlsm": excel_xlsm,
    "xlm-macrosheet.xlsm": excel_xlm,
    "velvetsweatshop.xlsm": encrypted_xlsm,
    "clean.docx": clean_docx,
}


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "office-fixtures")
    target.mkdir(parents=True, exist_ok=True)
    for name, build in FIXTURES.items():
        (target / name).write_bytes(build())
    print(f"wrote {len(FIXTURES)} files to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
