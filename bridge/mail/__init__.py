"""Mail, pure: headers, MIME parts and their transfer encodings, HTML to text, invitations,
and the summary a message publishes as. No I/O. May import: `bridge.config`'s model.
"""
