"""Commands from MQTT: parse and validate (pure), carry out on IMAP, and the worker that
answers each exactly once. May import: `bridge.config`, `bridge.auth`, `bridge.imap`,
`bridge.mailbox` (the publisher, for `fetch`), `bridge.mqtt`, `bridge.errors`.
"""
