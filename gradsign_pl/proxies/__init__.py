"""Zero-cost proxies, registered by name (see :func:`list_proxies`)."""

from gradsign_pl.proxies._registry import ProxyInfo, get_proxy, list_proxies, register_proxy, score
from gradsign_pl.proxies._result import ProxyResult
# importing a proxy module registers it
from gradsign_pl.proxies import ensemble, fisher, grad_norm, grasp, jacov, naswot, size, snip, synflow, zen  # noqa: F401
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
