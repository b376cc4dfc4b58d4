"""Topic names of the tree in the README's topic table: pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config.model import Config


@dataclass(frozen=True)
class Topics:
    """Every topic the bridge publishes or subscribes to, below `base`.

    The bridge's own topics are `B/bridge/...`; a named `instance` (one of several bridges
    on one base topic) has `B/bridge/<instance>/...` instead. Account topics are the same
    either way: an account belongs to one instance."""

    base: str
    instance: str | None = None

    @classmethod
    def of(cls, config: Config) -> Topics:
        """The topics of the bridge `config` describes."""
        return cls(config.mqtt.base_topic, config.bridge.instance)

    @property
    def bridge_prefix(self) -> str:
        return f"{self.base}/bridge/{self.instance}" if self.instance else f"{self.base}/bridge"

    @property
    def bridge_state(self) -> str:
        return f"{self.bridge_prefix}/state"

    @property
    def bridge_info(self) -> str:
        return f"{self.bridge_prefix}/info"

    @property
    def bridge_health(self) -> str:
        return f"{self.bridge_prefix}/health"

    @property
    def bridge_check(self) -> str:
        return f"{self.bridge_prefix}/check"

    @property
    def bridge_fence(self) -> str:
        """Published once at start: it arrives after the retained messages of the
        subscriptions made before it, so it marks their end."""
        return f"{self.bridge_prefix}/fence"

    def info_of(self, instance: str | None) -> str:
        """The info topic of the bridge called `instance` on this base topic."""
        return Topics(self.base, instance).bridge_info

    def peer_filters(self, leaf: str) -> tuple[str, str]:
        """`B/bridge/+/<leaf>` and `B/bridge/<leaf>`: that topic of every bridge."""
        return f"{self.base}/bridge/+/{leaf}", f"{self.base}/bridge/{leaf}"

    def peer_of(self, topic: str) -> tuple[str | None, str] | None:
        """(instance, leaf) of a bridge-level topic such as `B/bridge/a/info` (instance
        'a') or `B/bridge/info` (None: the bridge without an instance); else None."""
        head = f"{self.base}/bridge/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head):].split("/")
        if len(levels) == 1:
            return None, levels[0]
        if len(levels) == 2:
            return levels[0], levels[1]
        return None

    def account_status(self, account: str) -> str:
        return f"{self.base}/{account}/status"

    def account_command(self, account: str) -> str:
        return f"{self.base}/{account}/command"

    def command_result(self, account: str) -> str:
        return f"{self.base}/{account}/command/result"

    def folder_base(self, account: str, folder_topic: str) -> str:
        return f"{self.base}/{account}/{folder_topic}"

    def folder_state(self, account: str, folder_topic: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/state"

    def folder_message(self, account: str, folder_topic: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/message"

    def folder_error(self, account: str, folder_topic: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/error"

    def folder_route(self, account: str, folder_topic: str, route: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/route/{route}"

    def folder_command(self, account: str, folder_topic: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/command"

    def attachment_prefix(self, account: str, folder_topic: str) -> str:
        return f"{self.folder_base(account, folder_topic)}/attachment"
