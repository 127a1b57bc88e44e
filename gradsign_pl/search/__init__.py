"""Architecture search driven by zero-cost proxies.

- :mod:`~gradsign_pl.search.evolution`: ZenNAS-style evolution over a generative space (MasterNet structures).
- :mod:`~gradsign_pl.search.strategies`: NAS strategies over a cell space, registered by name (``rs``, ``rea``,
  ``reinforce``, ``bohb`` and their GradSign-assisted ``g-`` variants), with a simulated budget.
- :mod:`~gradsign_pl.search.nb201_tabular`: NAS-Bench-201 as a tabular cell space, evaluator and cached scorer.
"""

from gradsign_pl.search.evolution import (
    EvolutionSettings,
    MutableSpace,
    SearchResult,
    evolution_search,
    proxy_fitness,
)
from gradsign_pl.search.strategies import (
    Budget,
    CellSpace,
    Evaluator,
    SearchTrace,
    create_strategy,
    list_strategies,
    register_strategy,
)

__all__ = [
    "Budget",
    "CellSpace",
    "Evaluator",
    "EvolutionSettings",
    "MutableSpace",
    "SearchResult",
    "SearchTrace",
    "create_strategy",
    "evolution_search",
    "list_strategies",
    "proxy_fitness",
    "register_strategy",
]
