"""IMAP: connections (TLS, XOAUTH2, folder rules), FETCH parsing, BODYSTRUCTURE, and the
part-wise fetch. Nothing here publishes. May import: `bridge.config`, `bridge.auth` (the
token), `bridge.mail`, `bridge.errors`, `bridge.log`.
"""
