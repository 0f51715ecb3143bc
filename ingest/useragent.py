"""Device class from a User-Agent string, for events that do not say their device."""

from __future__ import annotations

__all__ = ["device_from_user_agent"]

_TABLET = ("iPad", "Tablet")
_MOBILE = ("Mobi", "Android", "iPhone")


def device_from_user_agent(user_agent: str | None) -> str | None:
    """``tablet`` / ``mobile`` / ``desktop`` from common UA markers; None without a UA."""
    if not user_agent:
        return None
    if any(marker in user_agent for marker in _TABLET):
        return "tablet"
    if any(marker in user_agent for marker in _MOBILE):
        return "mobile"
    return "desktop"
