"""gradsign_pl: pick the network before you train it.

Public API::

    from gradsign_pl import gradsign, score, list_proxies
    result = gradsign(model, images, labels)      # GradSignResult, result.score: higher = better
"""

from gradsign_pl.proxies import (
    GradSignResult,
    ProxyResult,
    get_proxy,
    gradsign,
    list_proxies,
    register_proxy,
    score,
)

__version__ = "0.1.0"

__all__ = [
    "GradSignResult",
    "ProxyResult",
    "__version__",
    "get_proxy",
    "gradsign",
    "list_proxies",
    "register_proxy",
    "score",
]
