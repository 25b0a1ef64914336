"""The SMTP gateway: protocol (server.py), policy and evidence (gateway.py), replies and refs."""
