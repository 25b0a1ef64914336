"""The gateway's decisions inside another MTA (Postfix): as a milter and as a policy-delegation service.

`milter_protocol` encodes and decodes the milter wire format, `milter` serves it, `policy` serves
Postfix's `check_policy_service` protocol, `sockets` listens on TCP or unix sockets for both, and
`session` is the gateway's handler (`smtp/gateway.Connection`) for a session that Postfix runs:
the same checks, replies and events, but Postfix speaks SMTP, keeps the queue and delivers.
docs/postfix.md has the Postfix side.
"""
