"""Zero-cost proxies, registered by name (see :func:`list_proxies`)."""

from gradsign_pl.proxies._registry import ProxyInfo, get_proxy, list_proxies, register_proxy, score
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies import size  # noqa: F401  (registers params)
from gradsign_pl.proxies.gradsign import GradSignResult, gradsign

__all__ = [
    "GradSignResult",
    "ProxyInfo",
    "ProxyResult",
    "get_proxy",
    "gradsign",
    "list_proxies",
    "register_proxy",
    "score",
]
