"""SMTP worker processes, one per core, and their supervisor."""
