"""Sending mail over SMTP AUTH with XOAUTH2 (docs/sending.md).

`compose` builds messages (pure, stdlib `email`), `hints` turns Exchange's SMTP answers into
fixes, `submit` speaks SMTP (smtplib, STARTTLS), `outbox` enforces the account's limits and
allow-list before anything is sent. May import `bridge.config`, `bridge.auth`, `bridge.errors`,
`bridge.log` and `bridge.mail`; never the command worker, MQTT or the service.
"""
