"""Mail, pure: headers, one MIME walk over an abstract part tree (a whole message, or a
BODYSTRUCTURE with some parts fetched), transfer encodings, HTML to text, invitations, the
attachment rules and the summary a message publishes as. No I/O. Imports nothing of the
bridge outside `bridge.mail`: callers build `SummaryOptions` from their config.
"""
