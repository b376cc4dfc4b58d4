"""The configuration model: frozen dataclasses, the fixed tables they draw on, and how
folder names compare (the INBOX case rule).

Pure: imports nothing of the bridge. `bridge.config.load` builds these from TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

DEFAULT_COMMANDS: tuple[str, ...] = (
    "mark_read", "mark_unread", "flag", "unflag", "move", "copy", "archive",
    "mark_all_read", "refresh", "fetch",
)
ALL_COMMANDS: tuple[str, ...] = (*DEFAULT_COMMANDS, "delete")

# cloud -> (authority host URL, IMAP host); the scope is https://<imap host>/.default
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("https://login.microsoftonline.com", "outlook.office365.com"),
    "usgov": ("https://login.microsoftonline.us", "outlook.office365.us"),
    "usgov-dod": ("https://login.microsoftonline.us", "outlook-dod.office365.us"),
    "china": ("https://login.partner.microsoftonline.cn", "partner.outlook.cn"),
}
# cloud -> SMTP AUTH host (client submission, STARTTLS on 587)
SMTP_HOSTS: dict[str, str] = {
    "global": "smtp.office365.com",
    "usgov": "smtp.office365.us",
    "usgov-dod": "smtp.office365.us",
    "china": "smtp.partner.outlook.cn",
}
# personal Microsoft accounts (auth = "device_code") submit here
CONSUMER_SMTP_HOST = "smtp-mail.outlook.com"
DEFAULT_CLIENT_ID = "outlook2mqtt"


def default_client_id(instance: str | None) -> str:
    """The MQTT client id when `mqtt.client_id` is not set: one per instance, because a
    broker disconnects a client whenever another connects with the same id."""
    return f"{DEFAULT_CLIENT_ID}-{instance}" if instance else DEFAULT_CLIENT_ID


def folder_key(name: str) -> str:
    """What folder names are compared by: INBOX is case-insensitive (RFC 3501 section 5.1),
    and so are the folders below it, which Exchange lists as 'Inbox/...' where people write
    'INBOX/...'."""
    return name.upper() if name.split("/", 1)[0].upper() == "INBOX" else name


def same_folder(one: str, other: str) -> bool:
    """Whether two folder names name the same folder."""
    return folder_key(one) == folder_key(other)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = DEFAULT_CLIENT_ID
    protocol: str = "5"  # "5" or "3.1.1"
    base_topic: str = "outlook2mqtt"
    qos: int = 1
    keepalive: int = 60
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False


@dataclass(frozen=True)
class HomeAssistantConfig:
    discovery: bool = True
    prefix: str = "homeassistant"


@dataclass(frozen=True)
class BridgeConfig:
    state_dir: Path = Path("./state")
    health_interval: int = 60  # seconds between `B/bridge/health` payloads; 0 = off
    # one of several bridges on a base topic: its own B/bridge/<instance>/... topics
    instance: str | None = None


@dataclass(frozen=True)
class RouteConfig:
    """Extra topic `B/A/F/route/<name>` for mail from `senders` (lower-case address globs,
    any one) and/or with a `subject` (a regex searched in the decoded subject)."""

    name: str
    senders: tuple[str, ...] = ()
    subject: str | None = None


@dataclass(frozen=True)
class FolderConfig:
    name: str
    topic: str
    backfill: int = 0
    attachments: bool = True
    max_attachment_bytes: int = 10_000_000
    inline_attachments: bool = False
    attachment_types: tuple[str, ...] = ("*/*",)  # globs, "!" denies: bridge.mail.policy
    include_body: bool = False
    preview_chars: int = 280
    search: str | None = None  # IMAP SEARCH criteria: bridge.config.search
    routes: tuple[RouteConfig, ...] = ()


@dataclass(frozen=True)
class SendConfig:
    """`[accounts.send]`: sending mail over SMTP AUTH (docs/sending.md)."""

    smtp_host: str
    allowed_recipients: tuple[str, ...]  # lower-case address globs
    enabled: bool = True
    smtp_port: int = 587
    max_per_minute: int = 30
    max_bytes: int = 25_000_000
    default_to: tuple[str, ...] = ()
    default_subject: str = "Home Assistant"

    def allows(self, address: str) -> bool:
        """Whether `address` matches an `allowed_recipients` glob (case-insensitive)."""
        wanted = address.lower()
        return any(fnmatchcase(wanted, glob) for glob in self.allowed_recipients)


@dataclass(frozen=True)
class AccountConfig:
    name: str
    mailbox: str
    tenant_id: str
    client_id: str
    auth: str  # "client_secret", "client_certificate" or "device_code"
    authority: str  # host URL without tenant, e.g. https://login.microsoftonline.com
    scope: str
    imap_host: str
    folders: tuple[FolderConfig, ...]
    client_secret: str | None = field(default=None, repr=False)
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    # client assertion signing: "RS256" (x5t = SHA-1 thumbprint, MSAL's form for a
    # thumbprint) or "PS256" (x5t#S256 = SHA-256 thumbprint, with the chain in x5c: the form
    # Microsoft documents)
    assertion_algorithm: str = "RS256"
    cloud: str = "global"
    imap_port: int = 993
    imap_security: str = "tls"  # "tls" (implicit) or "starttls"
    ca_file: Path | None = None
    poll_interval: float = 60
    idle: bool = True
    idle_renew: float = 540
    token_cache: Path | None = None
    commands: tuple[str, ...] = DEFAULT_COMMANDS
    send: SendConfig | None = None  # None: no [accounts.send] table

    @property
    def sending(self) -> bool:
        """Whether the account may send mail: `[accounts.send]` is there and enabled."""
        return self.send is not None and self.send.enabled

    @property
    def authority_url(self) -> str:
        """The MSAL authority: host URL plus tenant, no trailing slash."""
        return f"{self.authority.rstrip('/')}/{self.tenant_id}"

    def folder(self, name: str) -> FolderConfig | None:
        """The configured folder called `name`, compared by `same_folder`."""
        return next((f for f in self.folders if same_folder(f.name, name)), None)


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig
    accounts: tuple[AccountConfig, ...]
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    bridge: BridgeConfig = BridgeConfig()
    source: Path | None = None

    def account(self, name: str) -> AccountConfig | None:
        """The account called `name`, if configured."""
        return next((a for a in self.accounts if a.name == name), None)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret in the configuration, for redacting logs and error texts."""
        values = [self.mqtt.password]
        for a in self.accounts:
            values += [a.client_secret, a.private_key_passphrase]
        return tuple(s for s in values if s)
