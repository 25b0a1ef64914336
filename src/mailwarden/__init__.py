"""mailwarden: an inbound mail gateway that decides in the SMTP session and keeps the evidence."""

__version__ = "0.1.0"
