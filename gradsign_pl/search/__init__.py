"""Architecture search driven by zero-cost proxies (ZenNAS-style evolution over a mutable space)."""

from gradsign_pl.search.evolution import (
    EvolutionSettings,
    MutableSpace,
    SearchResult,
    evolution_search,
    proxy_fitness,
)

__all__ = ["EvolutionSettings", "MutableSpace", "SearchResult", "evolution_search", "proxy_fitness"]
