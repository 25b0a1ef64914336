"""`mailwarden ingest`: import log archives, or follow log files until interrupted; cli.py parses."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

from mailwarden.config import Config
from mailwarden.ingest.inputs import Importer
from mailwarden.ingest.pipeline import IngestError
from mailwarden.ingest.progress import import_progress, summary
from mailwarden.ingest.service import IngestService, configured_ingester


def _total_size(paths: list[str]) -> int:
    total = 0
    for path in paths:
        if path != "-":
            try:
                total += Path(path).stat().st_size
            except OSError:
                pass
    return total


def ingest(
    config: Config,
    paths: list[str],
    *,
    follow: bool = False,
    fmt: str | None = None,
    node: str | None = None,
    reimport: bool = False,
    progress: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Parse `paths` into the configured store; print a summary. Exit code 0, or 2 on a read error."""
    from mailwarden.store import open_store

    out = out or sys.stdout
    err = err or sys.stderr
    missing = [path for path in paths if path != "-" and not Path(path).exists()]
    if missing:
        raise IngestError(f"no such file: {', '.join(missing)}")
    if follow and "-" in paths:
        raise IngestError("--follow needs files; standard input cannot be followed")
    store = open_store(config)
    started = time.monotonic()
    try:
        ingester = configured_ingester(config, store, fmt, node)
        if follow:
            service = IngestService(
                ingester,
                store,
                [Path(path) for path in paths],
                warmup_bytes=config.ingest.warmup_bytes,
                max_line=config.ingest.max_line,
            )
            _follow_until_signalled(service, err)
            if service.error is not None:
                raise service.error
        else:
            show = err.isatty() if progress is None else progress
            bar = import_progress(err, _total_size(paths), ingester.stats) if show else None
            importer = Importer(
                store,
                ingester,
                reimport=reimport,
                warmup_bytes=config.ingest.warmup_bytes,
                max_line=config.ingest.max_line,
                progress=bar,
            )
            try:
                importer.run(paths)
            except OSError as exc:
                raise IngestError(str(exc)) from exc
            for note in importer.skipped:
                print(note, file=err)
        store.flush()
    finally:
        store.close()
    print(summary(ingester.stats, time.monotonic() - started), file=out)
    return 0


def _follow_until_signalled(service: IngestService, err: TextIO) -> None:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        print(f"following {', '.join(str(f.path) for f in service.followers)}; Ctrl-C ends", file=err, flush=True)
        while not stop.wait(0.5) and service.error is None:
            pass
    finally:
        service.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
