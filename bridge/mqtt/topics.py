"""Topic names of the tree in the README's topic table: pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every topic the bridge publishes or subscribes to, below `base`."""

    base: str

    @property
    def bridge_state(self) -> str:
        return f"{self.base}/bridge/state"

    @property
    def bridge_info(self) -> str:
        return f"{self.base}/bridge/info"

    @property
    def bridge_health(self) -> str:
        return f"{self.base}/bridge/health"

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
