"""One mailbox at work: the folder watcher, the publisher of summaries and attachments,
the stored positions and the account's status. May import: `bridge.config`, `bridge.auth`,
`bridge.imap`, `bridge.mail`, `bridge.mqtt`, `bridge.errors`, `bridge.util`.
"""
