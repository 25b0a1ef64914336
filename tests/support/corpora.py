"""Reading the public log corpora (tests/data/corpora, see its README) and what they expect of each line."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Vendored copies of the public corpora, with their SOURCE.md and LICENSE files and the README's
# licence table, so that every checkout (CI's included) runs the corpus tests instead of skipping them.
CORPORA = Path(__file__).resolve().parents[1] / "data" / "corpora"


@dataclass
class Fail2banSample:
    line: str
    expected: dict[str, Any]


def fail2ban_samples(name: str) -> list[Fail2banSample]:
    """Each sample line of fail2ban's test log `name` with the `failJSON` verdict before it."""
    samples: list[Fail2banSample] = []
    pending: dict[str, Any] | None = None
    for line in (CORPORA / "fail2ban" / name).read_text(errors="surrogateescape").splitlines():
        if line.startswith("# failJSON:"):
            pending = json.loads(line.removeprefix("# failJSON:"))
        elif line.startswith("#") or not line.strip():
            continue
        elif pending is not None:
            samples.append(Fail2banSample(line, pending))
            pending = None
    return samples


def all_lines(folder: str) -> list[tuple[str, str]]:
    """(file name, line) of every non-comment line of every file below corpora/`folder`."""
    out: list[tuple[str, str]] = []
    for path in sorted((CORPORA / folder).rglob("*")):
        if not path.is_file() or path.suffix in (".md", ".yaml", ".assert") or path.name == "LICENSE":
            continue
        for line in path.read_bytes().decode("utf-8", "backslashreplace").splitlines():
            if line and not line.startswith("# failJSON") and not line.startswith("# filterOptions"):
                out.append((path.name, line))
    return out


_ASSERTION = re.compile(r'results\["s01-parse"\]\["([^"]+)"\]\[(\d+)\]\.Evt\.(Parsed|Meta)\["([^"]+)"\] == "(.*)"$')


@dataclass
class CrowdsecCase:
    """One line of a crowdsec hub test and the fields its parser asserts for it."""

    line: str
    fields: dict[str, str] = field(default_factory=dict)


def crowdsec_cases(directory: str) -> tuple[list[str], list[CrowdsecCase]]:
    """The lines of a crowdsec hub test folder and, per asserted parse result, its line and fields."""
    folder = CORPORA / "crowdsec-hub" / directory
    lines: list[str] = []
    for path in sorted(folder.glob("*.log")):
        lines.extend(path.read_text(errors="backslashreplace").splitlines())
    groups: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    assert_file = folder / "parser.assert"
    if assert_file.exists():
        for text in assert_file.read_text().splitlines():
            found = _ASSERTION.match(text)
            if found is not None:
                value = found[5].replace('\\"', '"').replace("\\\\", "\\")
                groups[(found[1], int(found[2]))][f"{found[3]}.{found[4]}"] = value
    cases: list[CrowdsecCase] = []
    for (_, index), fields in groups.items():
        message = fields.get("Parsed.message")
        if message is None:  # the parse results are numbered like the lines
            if index < len(lines):
                cases.append(CrowdsecCase(lines[index], fields))
            continue
        matching = [line for line in lines if line.endswith(message)]
        if matching:
            cases.append(CrowdsecCase(matching[0], fields))
    return lines, cases


@dataclass
class GrokCase:
    """One postfix-grok-patterns case: the daemon its pattern is for, the message and the fields."""

    name: str
    daemon: str
    data: str
    results: dict[str, str]


def _yaml_scalar(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        loaded: str = json.loads(text)
        return loaded
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def grok_cases() -> list[GrokCase]:
    """The postfix-grok-patterns test cases (a tiny reader for their flat YAML)."""
    cases: list[GrokCase] = []
    for path in sorted((CORPORA / "postfix-grok-patterns" / "test").glob("*.yaml")):
        pattern = data = ""
        results: dict[str, str] = {}
        in_results = False
        for line in path.read_text().splitlines():
            if line.startswith("pattern:"):
                pattern = _yaml_scalar(line[8:]).strip("^$")
            elif line.startswith("data:"):
                data = _yaml_scalar(line[5:])
            elif line.startswith("results:"):
                in_results = True
            elif in_results and line.startswith(" ") and ":" in line:
                key, _, value = line.strip().partition(":")
                results[key] = _yaml_scalar(value)
        daemon = pattern.removeprefix("%{POSTFIX_").removesuffix("}").lower().replace("_", "-")
        cases.append(GrokCase(path.stem, daemon, data, results))
    return cases
