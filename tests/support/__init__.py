"""Test support: running mailwarden and the real mail servers privately on loopback."""
