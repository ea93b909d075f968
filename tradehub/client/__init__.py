"""Python clients of the hub: a blocking one for scripts and trainers."""

from .blocking import BlockingClient
from .errors import HubError

__all__ = ["BlockingClient", "HubError"]
