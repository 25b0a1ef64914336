"""Ingest: the logs of existing mail systems (Postfix, Dovecot, Exim, rspamd, amavis, clamav-milter) as events.

One parser module per source turns framed lines into events; `pipeline.Ingester` frames,
dispatches, correlates and counts; the readers feed it from files, rotated archives, stdin,
followed files and the syslog receiver. docs/ingest.md describes the event conventions.
"""

from mailwarden.ingest.pipeline import FORMATS, Ingester, Stats, parse_lines

__all__ = ["FORMATS", "Ingester", "Stats", "parse_lines"]
