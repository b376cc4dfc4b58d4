"""outlook2mqtt: Outlook / Exchange Online mailboxes to MQTT."""

__version__ = "0.1.0"
