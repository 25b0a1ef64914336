"""Delivery: the local Maildir store (and, in proxy mode, a downstream LMTP/SMTP server)."""
