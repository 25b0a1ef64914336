"""Messages: who a message is (its key, decided by the writer), how its hops are linked, and the
message index (one row per message and recipient) that searches, counts and scoping run on.

Pure rules over events, shared by the writers (gateway, POP3, ingest), the store (which keeps the
links and the index up to date as events are written) and the trace (which reads them).
"""
