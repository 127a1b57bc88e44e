"""Zero-cost proxies, registered by name (see :func:`list_proxies`)."""

# importing a proxy module registers it
from gradsign_pl.proxies import (  # noqa: F401
    az_nas,
    ensemble,
    fisher,
    grad_norm,
    grasp,
    jacov,
    meco,
    naswot,
    size,
    snip,
    synflow,
    zen,
    zico,
)
from gradsign_pl.proxies._common import batch_fingerprint, is_out_of_memory, private_copy
from gradsign_pl.proxies._registry import (
    ProxyInfo,
    check_options,
    get_proxy,
    list_proxies,
    proxy_options,
    register_proxy,
    score,
    set_level_proxies,
)
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies.gradsign import GradSignResult, gradsign

__all__ = [
    "GradSignResult",
    "ProxyInfo",
    "ProxyResult",
    "batch_fingerprint",
    "check_options",
    "get_proxy",
    "gradsign",
    "is_out_of_memory",
    "list_proxies",
    "private_copy",
    "proxy_options",
    "register_proxy",
    "score",
    "set_level_proxies",
]
