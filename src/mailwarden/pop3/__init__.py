"""POP3 access to the mail store (RFC 1939, 2449, 2595, 5034), every login, retrieval and deletion an event."""
