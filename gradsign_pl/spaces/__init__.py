"""Search spaces, registered by name (see :func:`list_spaces`)."""

# importing a space module registers it
from gradsign_pl.spaces import nb201, zen  # noqa: F401
from gradsign_pl.spaces._registry import (
    SearchSpace,
    create_space,
    list_spaces,
    register_space,
)

__all__ = ["SearchSpace", "create_space", "list_spaces", "register_space"]
