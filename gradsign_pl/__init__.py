"""gradsign_pl: pick the network before you train it.

Public API::

    from gradsign_pl import gradsign, score, list_proxies, rank, GradSignCallback
    result = gradsign(model, images, labels)      # GradSignResult, result.score: higher = better
    ranking = rank(["timm:resnet18", "torchvision:mobilenet_v3_small"], (images, labels), num_classes=10)
    ranking = rank(candidates, datamodule, policy=ScoringPolicy("mine", init="norm_ones"))  # scoring.policy
    trainer = Trainer(callbacks=[GradSignCallback()])
    result = evolution_search(create_space("zen"), fitness, EvolutionSettings(max_params=1e6))   # MasterNet search
"""

from gradsign_pl.callbacks import GradSignCallback
from gradsign_pl.candidates import Candidate, build_model, candidate, list_candidates
from gradsign_pl.halving import HalvingResult, RungPlan, halving, plan_rungs, successive_halving
from gradsign_pl.modules import DistillationModule, load_teacher
from gradsign_pl.proxies import (
    GradSignResult,
    ProxyResult,
    get_proxy,
    gradsign,
    list_proxies,
    register_proxy,
    score,
)
from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.scoring.policy import CELL_SPACE_POLICY, REAL_MODEL_POLICY, ScoringPolicy
from gradsign_pl.search import EvolutionSettings, evolution_search, proxy_fitness
from gradsign_pl.spaces import create_space, list_spaces, register_space
from gradsign_pl.triage import Ranking, rank

__version__ = "0.1.0"

__all__ = [
    "CELL_SPACE_POLICY",
    "REAL_MODEL_POLICY",
    "Candidate",
    "DistillationModule",
    "EvolutionSettings",
    "GradSignCallback",
    "GradSignResult",
    "HalvingResult",
    "ProxyResult",
    "Ranking",
    "RungPlan",
    "ScoringPolicy",
    "__version__",
    "build_model",
    "candidate",
    "create_space",
    "evolution_search",
    "get_proxy",
    "gradsign",
    "halving",
    "list_candidates",
    "list_proxies",
    "list_spaces",
    "load_teacher",
    "plan_rungs",
    "proxy_fitness",
    "rank",
    "rank_ensemble",
    "register_proxy",
    "register_space",
    "score",
    "successive_halving",
]
