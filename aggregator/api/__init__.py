"""The aggregator's REST API (FastAPI): `create_app(services)`."""

from aggregator.api.app import API_PREFIX, STATIC_DIR, TEMPLATES_DIR, create_app
from aggregator.api.deps import ApiContext, ApiServices, CommandSender

__all__ = [
    "API_PREFIX",
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "ApiContext",
    "ApiServices",
    "CommandSender",
    "create_app",
]
