"""The layering of docs/architecture.md ("Layers"), checked on the source: shared pieces live in the
core and are not copied into rooms, the SQL both stores run is not copied into each, rooms other
than the SMTP layer do not reach into smtp/, and trace/ returns text instead of printing it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mailwarden
from mailwarden.store.sql import SQLITE

SOURCE = Path(mailwarden.__file__).parent
# The shapes of a reply code and an enhanced status code as they appear in a pattern's source.
_CODE_SHAPES = re.compile(r"\\d\{1,3\}\\.\\d\{1,3\}|\\d\{3\}\)?\[ -\]|\\d\\d\)?\[ -\]|\[245\]\\d\\d|\[2-5\]\\d\\d")


# The SMTP layer and the edges that start it: the only modules that may import mailwarden.smtp.
_SMTP_LAYER = ("smtp", "mta", "workers", "serve.py")


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports (also under TYPE_CHECKING or inside a function), relative imports resolved."""
    package = ["mailwarden", *path.relative_to(SOURCE).parent.parts]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            imported.add(module)
            imported.update(f"{module}.{alias.name}" for alias in node.names)
    return imported


def test_trace_prints_nothing_the_command_line_does() -> None:
    printing = []
    for path in _modules(SOURCE / "trace"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{path.name}:{node.lineno} print()")
            if isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
                printing.append(f"{path.name}:{node.lineno} sys.{node.attr}")
    assert printing == []


def test_rooms_outside_the_smtp_layer_do_not_import_from_smtp() -> None:
    reaching_in = []
    for path in _modules(SOURCE):
        if path.relative_to(SOURCE).parts[0] in _SMTP_LAYER:
            continue
        for module in sorted(_imported_modules(path)):
            if module == "mailwarden.smtp" or module.startswith("mailwarden.smtp."):
                reaching_in.append(f"{path.relative_to(SOURCE)}: {module}")
    assert reaching_in == []


def test_smtp_reply_codes_are_parsed_only_by_the_shared_parser() -> None:
    copies = []
    for path in _modules(SOURCE):
        if path.name == "replycodes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
                if _CODE_SHAPES.search(text):
                    copies.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    assert copies == []


def test_the_two_stores_run_the_shared_statements_instead_of_copies_of_them() -> None:
    shared = {" ".join(text.split()) for text in SQLITE}
    copies = []
    for path in _modules(SOURCE / "store"):
        if path.name == "sql.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if " ".join(text.replace("%s", "?").split()) in shared:
                copies.append(f"{path.name}:{node.lineno}")
    assert copies == []
