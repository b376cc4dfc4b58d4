"""Home Assistant's template rendering, as far as the bridge's MQTT templates use it."""

from __future__ import annotations

import json
from typing import Any

import jinja2.sandbox


def render_ha(template: str, **variables: Any) -> str:
    """Render like Home Assistant: a sandbox, with its `to_json` filter (orjson-like)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    env.filters["to_json"] = lambda obj: json.dumps(obj, ensure_ascii=False)
    return str(env.from_string(template).render(**variables))
