"""Scoring policies in rank() and GradSignCallback: which policy is used, that it is applied to what is scored (and
only there), recorded with the results, and how ties and low gradient signal are reported."""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import re

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradsign_pl.callbacks import GradSignCallback
from gradsign_pl.candidates import candidate
from gradsign_pl.proxies import gradsign
from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.scoring.policy import CELL_SPACE_POLICY, REAL_MODEL_POLICY, ScoringPolicy, apply_init_policy
from gradsign_pl.spaces.zen import MasterNet
from gradsign_pl.triage import LOW_SIGNAL, rank
from tests.models import TinyCNN

CLASSES = 10
ZEN = "zen:SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
ZEN_SMALL = "zen:SuperConvK3BNRELU(3,8,1,1)SuperConvK1BNRELU(8,16,1,1)"


# --------------------------------------------------------------------------- helpers


class ZeroResidual(nn.Module):
    """A stem, one residual branch whose last BatchNorm weight is zero (as timm's ``zero_init_last``), a head.

    Almost all conv weights sit in the branch, so as built they get exactly zero gradient (~3% of the selected
    weights have any gradient, below :data:`LOW_SIGNAL`).
    """

    def __init__(self, num_classes: int = CLASSES, in_chans: int = 3, width: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.branch = nn.Sequential(
            nn.Conv2d(width, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        nn.init.zeros_(self.branch[-1].weight)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = F.relu(h + self.branch(h))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def zero_residual(num_classes, in_chans):
    return ZeroResidual(num_classes, in_chans)


def tiny(width):
    def factory(num_classes, in_chans):
        return TinyCNN(num_classes, in_chans, width)

    return factory


def run(cands, batch, proxies=("gradsign",), **kwargs):
    """rank() with the authors' semantics unless the test passes its own policy (the mechanics are under test)."""
    kwargs.setdefault("policy", "cell-space")
    return rank(cands, batch, list(proxies), num_classes=CLASSES, device="cpu", progress=False, **kwargs)


def expected_gradsign(factory, batch, init, seed=0, **options):
    """What rank() must give for seed ``seed``: built and re-initialised under that seed, scored by gradsign."""
    torch.manual_seed(seed)
    model = apply_init_policy(factory(num_classes=CLASSES, in_chans=3), init)
    return gradsign(model, *batch, **options)


def selected_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, CLASSES, (8,), generator=g)


# --------------------------------------------------------------------------- 1. the policy is recorded


def test_rank_records_the_policy_in_the_ranking_json_csv_and_table(batch, tmp_path):
    policy = ScoringPolicy(
        "mine",
        init="norm_ones",
        proxy_options={"gradsign": {"reduction": "mean"}},
        order_terms=("proxy", "params"),
        seeds=2,
    )
    ranking = run({"z": zero_residual, "w4": tiny(4)}, batch, policy=policy)
    assert set(ranking.policy) == {"name", "init", "proxy_options", "order_terms", "seeds", "summary"}
    assert ranking.policy == {**policy.describe(), "summary": policy.summary()}
    assert ranking.policy["name"] == "mine" and ranking.policy["init"] == "norm_ones"
    assert ranking.policy["proxy_options"] == {"gradsign": {"reduction": "mean"}}
    assert ranking.policy["order_terms"] == ["proxy", "params"] and ranking.policy["seeds"] == 2 == ranking.seeds
    assert (
        ranking.policy["summary"]
        == "mine: init=norm_ones, gradsign(reduction=mean), ordered by proxy + params, mean of 2 seeds"
    )

    data = json.loads(ranking.to_json(tmp_path / "r.json").read_text())
    assert data["policy"] == ranking.policy

    with open(ranking.to_csv(tmp_path / "r.csv"), newline="") as fh:
        reader = csv.DictReader(fh)
        assert {"tied", "signal", "warnings"} <= set(reader.fieldnames)
        rows = {r["name"]: r for r in reader}
    for r in ranking.rows:
        assert rows[r.name]["tied"] == str(r.tied)
        assert float(rows[r.name]["signal"]) == pytest.approx(r.signal)
        assert rows[r.name]["warnings"] == "; ".join(r.warnings)

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(ranking)
    text = console.export_text()
    assert "gradsign + params" in text and "policy mine: init=norm_ones" in text


def test_an_explicit_seed_count_is_the_one_recorded(batch):
    ranking = run({"w4": tiny(4)}, batch, policy=ScoringPolicy("two", seeds=2), seeds=1)
    assert ranking.seeds == 1 and ranking.policy["seeds"] == 1
    assert len(ranking["w4"].per_seed["gradsign"]) == 1


def test_the_summary_agrees_with_an_explicit_seed_count(batch):
    ranking = run({"w4": tiny(4)}, batch, ["params"], policy=ScoringPolicy("two", seeds=2), seeds=1)
    assert "2 seeds" not in ranking.policy["summary"]


# --------------------------------------------------------------------------- 2. which policy


def test_auto_picks_the_cell_space_policy_only_when_every_candidate_is_from_a_cell_space(batch):
    assert candidate(ZEN).kind == "zen" and candidate(ZEN).is_cell_space
    assert candidate(tiny(4)).kind == "callable" and not candidate(tiny(4)).is_cell_space
    assert candidate("timm:resnet18").kind == "timm" and not candidate("timm:resnet18").is_cell_space
    class_path = {"class_path": "tests.models.TinyCNN", "init_args": {"width": 2}}
    assert candidate(class_path).kind == "class_path"

    zen_only = run({"a": ZEN, "b": ZEN_SMALL}, batch, ["params"], policy="auto")
    assert zen_only.policy["name"] == CELL_SPACE_POLICY.name == "cell-space"
    assert all(r.status == "ok" for r in zen_only.rows)
    assert run({"a": ZEN, "b": ZEN_SMALL}, batch, ["params"], policy=None).policy["name"] == "cell-space"
    real = run({"f": tiny(4), "timm": "timm:resnet18", "cp": class_path}, batch, ["params"], policy="auto")
    assert real.policy["name"] == REAL_MODEL_POLICY.name == "real-model"
    assert all(r.status == "ok" for r in real.rows)
    mixed = run({"zen": ZEN, "f": tiny(4)}, batch, ["params"], policy="auto")
    assert mixed.policy["name"] == "real-model"
    assert real.seeds == REAL_MODEL_POLICY.seeds and zen_only.seeds == CELL_SPACE_POLICY.seeds


def test_explicit_policies_and_an_unknown_name(batch):
    zen = {"a": ZEN_SMALL}
    assert run(zen, batch, ["params"], policy="real-model").policy["name"] == "real-model"
    assert run({"f": tiny(2)}, batch, ["params"], policy="cell-space").policy["name"] == "cell-space"
    mine = ScoringPolicy("mine", init="uniform")
    ranking = run(zen, batch, ["params"], policy=mine)
    assert ranking.policy == {**mine.describe(), "summary": mine.summary()}
    for bad in ("cellspace", "norm_ones", ""):
        with pytest.raises(ValueError, match="policy must be"):
            run({"f": tiny(2)}, batch, ["params"], policy=bad)


# --------------------------------------------------------------------------- 3-5. the policy is what is scored


def test_the_init_policy_is_applied_to_the_scored_model(batch):
    norm = run({"z": zero_residual}, batch, policy=ScoringPolicy("t", init="norm_ones"))["z"]
    expected = expected_gradsign(zero_residual, batch, "norm_ones")
    assert norm.scores["gradsign"] == expected.score
    assert norm.per_seed["gradsign"] == [expected.score]
    assert norm.signal == expected.n_active_params / expected.n_params

    built = run({"z": zero_residual}, batch, policy=ScoringPolicy("t", init="as_built"))["z"]
    as_built = expected_gradsign(zero_residual, batch, "as_built")
    assert built.scores["gradsign"] == as_built.score
    assert built.signal == as_built.n_active_params / as_built.n_params
    assert built.signal < norm.signal
    assert built.scores["gradsign"] < norm.scores["gradsign"]


def test_uniform_init_is_drawn_under_the_seed_and_leaves_the_callers_rng_alone(batch):
    torch.manual_seed(1234)
    random.seed(99)
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    ranking = run({"z": zero_residual, "w4": tiny(4)}, batch, policy=ScoringPolicy("u", init="uniform"), seeds=2)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    for name, factory in (("z", zero_residual), ("w4", tiny(4))):
        assert ranking[name].per_seed["gradsign"] == [
            expected_gradsign(factory, batch, "uniform", seed=s).score for s in range(2)
        ]
    assert ranking["z"].signal > LOW_SIGNAL  # reset_parameters() set the zeroed BatchNorm weight back to 1


def test_proxy_options_reach_the_proxy(batch):
    cands = {"z": zero_residual, "w4": tiny(4)}
    summed = run(cands, batch)
    mean = run(cands, batch, policy=ScoringPolicy("m", proxy_options={"gradsign": {"reduction": "mean"}}))
    for name, factory in cands.items():
        m = selected_weights(factory(CLASSES, 3))
        assert mean[name].scores["gradsign"] == pytest.approx(summed[name].scores["gradsign"] / m, rel=1e-12)
        assert mean[name].scores["gradsign"] == expected_gradsign(factory, batch, "as_built", reduction="mean").score


def test_order_terms_join_the_log_rank_ordering(batch):
    cands = {"w4": tiny(4), "z": zero_residual, "w6": tiny(6)}
    plain = run(cands, batch)
    ranking = run(cands, batch, policy=ScoringPolicy("s", order_terms=("proxy", "params")))
    assert ranking.order_by == "gradsign"
    names = list(cands)
    g = [ranking[n].scores["gradsign"] for n in names]
    p = [float(ranking[n].params) for n in names]
    assert g == [plain[n].scores["gradsign"] for n in names]  # the size term changes the order, not the scores

    # by hand: ascending ranks 1..m of each term (no ties here), log(rank / m) summed, higher first
    m = len(names)

    def ranks(values):
        assert len(set(values)) == m
        return [sorted(values).index(v) + 1 for v in values]

    keys = [math.log(a / m) + math.log(b / m) for a, b in zip(ranks(g), ranks(p))]
    assert keys == pytest.approx(list(rank_ensemble({"gradsign": g, "params": p}, "log_rank")))
    assert len(set(keys)) == m
    by_hand = [n for _, n in sorted(zip(keys, names), reverse=True)]
    assert [r.name for r in ranking.rows] == by_hand
    assert [r.rank for r in ranking.rows] == [1, 2, 3]
    # and it is not simply the GradSign order: the big, low-signal model climbs on its size
    assert [r.name for r in plain.rows] == sorted(names, key=lambda n: -plain[n].scores["gradsign"])
    assert [r.name for r in ranking.rows] != [r.name for r in plain.rows]


# --------------------------------------------------------------------------- 6. ties


def test_the_same_architecture_twice_is_a_tie_shown_in_the_table(batch):
    ranking = run({"twin_a": tiny(4), "twin_b": tiny(4), "small": tiny(2)}, batch)
    a, b, small = ranking["twin_a"], ranking["twin_b"], ranking["small"]
    assert a.per_seed == b.per_seed and a.scores == b.scores
    assert a.tied and b.tied and not small.tied
    assert {a.rank, b.rank} == {1, 2} and small.rank == 3

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(ranking)
    text = console.export_text()
    lines = text.splitlines()

    def row(name):
        (line,) = [ln for ln in lines if name in ln]
        return line

    assert re.search(rf"\b{a.rank}=", row("twin_a")) and re.search(rf"\b{b.rank}=", row("twin_b"))
    assert "=" not in row("small")
    assert "'=' marks a tie" in text


def test_tied_marks_adjacent_pairs_whose_order_flips_between_seeds(batch):
    cands = {f"w{w}": tiny(w) for w in (2, 3, 5, 6)}
    cands["z"] = zero_residual  # GradSign close to w3's: their order differs between seeds
    ranking = run(cands, batch, seeds=3)
    ok = [r for r in ranking.rows if r.status == "ok"]
    assert len(ok) == 5 and all(len(r.per_seed["gradsign"]) == 3 for r in ok)
    means = [r.scores["gradsign"] for r in ok]
    assert means == sorted(means, reverse=True)

    expected = [False] * len(ok)
    for i, (hi, lo) in enumerate(zip(ok, ok[1:])):
        flips = any(x <= y for x, y in zip(hi.per_seed["gradsign"], lo.per_seed["gradsign"]))
        if flips or hi.scores["gradsign"] == lo.scores["gradsign"]:
            expected[i] = expected[i + 1] = True
    assert [r.tied for r in ok] == expected
    assert any(expected) and not all(expected)  # both cases occur in this set


# --------------------------------------------------------------------------- 7. low signal


def test_low_gradient_signal_is_warned_about_as_built_but_not_with_norm_ones(batch, tmp_path):
    built = run({"z": zero_residual, "w4": tiny(4)}, batch, policy=ScoringPolicy("t", init="as_built"))
    assert built["z"].signal < LOW_SIGNAL
    assert len(built["z"].warnings) == 1 and "low gradient signal" in built["z"].warnings[0]
    assert built["w4"].warnings == []
    record = {r["name"]: r for r in json.loads(built.to_json(tmp_path / "r.json").read_text())["candidates"]}
    assert "low gradient signal" in record["z"]["warnings"] and record["w4"]["warnings"] is None

    ones = run({"z": zero_residual}, batch, policy=ScoringPolicy("t", init="norm_ones"))
    assert ones["z"].signal >= LOW_SIGNAL and ones["z"].warnings == []


# --------------------------------------------------------------------------- 9. GradSignCallback


class Wrapped(LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module, batch, callback, tmp_path):
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_train_batches=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(module, DataLoader(TensorDataset(*batch), batch_size=len(batch[0])))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_callback_scores_a_norm_ones_copy_and_leaves_the_module_alone(batch, tmp_path):
    torch.manual_seed(0)
    module = Wrapped(ZeroResidual())
    before = snapshot(module)
    expected = gradsign(apply_init_policy(copy.deepcopy(module), "norm_ones"), *batch)
    as_built = gradsign(module, *batch).score

    policy = ScoringPolicy("t", init="norm_ones")
    cb = GradSignCallback(policy=policy)
    fit(module, batch, cb, tmp_path)
    assert cb.results["gradsign"]["options"]["policy"]["init"] == "norm_ones"
    assert cb.results["gradsign"]["options"]["policy"] == policy.describe()
    assert cb.scores["gradsign"] == expected.score != as_built
    after = snapshot(module)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.count_nonzero(module.net.branch[-1].weight) == 0


def test_callback_policy_argument_is_validated():
    with pytest.raises(ValueError, match="policy must be"):
        GradSignCallback(policy="no-such-policy")
    for bad in (42, {"init": "norm_ones"}, CELL_SPACE_POLICY.describe()):
        with pytest.raises(TypeError, match="policy must be"):
            GradSignCallback(policy=bad)
    for good in (None, "auto", "cell-space", "real-model", ScoringPolicy("x")):
        assert GradSignCallback(policy=good).policy == good


def test_callback_auto_policy_follows_the_module(batch, tmp_path):
    torch.manual_seed(0)
    cb = GradSignCallback(("params",))
    fit(Wrapped(MasterNet(ZEN_SMALL.removeprefix("zen:"), CLASSES)), batch, cb, tmp_path)
    assert cb.results["params"]["options"]["policy"]["name"] == "cell-space"

    cb = GradSignCallback(("params",))
    fit(Wrapped(TinyCNN(CLASSES, 3, 2)), batch, cb, tmp_path)
    assert cb.results["params"]["options"]["policy"]["name"] == "real-model"


def test_order_terms_without_the_proxy_order_by_size_and_still_show_the_proxy(batch):
    cands = {"w4": tiny(4), "z": zero_residual, "w6": tiny(6)}
    ranking = run(cands, batch, policy=ScoringPolicy("size", order_terms=("params",)))
    assert [r.name for r in ranking.rows] == sorted(cands, key=lambda n: -ranking[n].params)
    assert all(math.isfinite(r.scores["gradsign"]) for r in ranking.rows)
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(ranking)
    assert "Ranking by params" in console.export_text()


def test_the_shipped_real_model_default_orders_by_params_and_shows_gradsign(batch):
    # docs/results/triage.md: on held-out families no GradSign option beat #params, so the default orders by size
    cands = {"w4": tiny(4), "w8": tiny(8), "z": zero_residual}
    ranking = run(cands, batch, policy="auto")
    assert ranking.policy["order_terms"] == list(REAL_MODEL_POLICY.order_terms) == ["params"]
    assert [r.name for r in ranking.rows] == sorted(cands, key=lambda n: -ranking[n].params)
    assert all(len(r.per_seed["gradsign"]) == REAL_MODEL_POLICY.seeds for r in ranking.rows)
    assert ranking["z"].scores["gradsign"] == pytest.approx(
        sum(expected_gradsign(zero_residual, batch, "uniform", seed=s).score for s in range(3)) / 3, rel=1e-12
    )


def test_the_report_judges_a_combined_order_by_its_ranks(batch):
    from gradsign_pl.report import agreement

    cands = {"w4": tiny(4), "w6": tiny(6), "w8": tiny(8)}
    ranking = run(cands, batch, policy=ScoringPolicy("s", order_terms=("proxy", "params")))
    assert ranking.order_description == "gradsign + params"
    by_rank = [r.name for r in ranking.rows]
    trained = [{"name": n, "status": "trained", "test_acc": acc} for n, acc in zip(by_rank, (0.9, 0.5, 0.1))]
    stats = agreement(ranking, trained)
    assert stats["the ranking (gradsign + params)"] == {
        "spearman": pytest.approx(1.0, abs=1e-5),
        "kendall": pytest.approx(1.0, abs=1e-5),
        "n": 3,
    }
    plain = agreement(run(cands, batch, policy=ScoringPolicy("p", order_terms=("params",))), trained)
    assert not any(k.startswith("the ranking") for k in plain)  # ordered by params: the params row says it


# --------------------------------------------------------------------------- review findings, pinned


def test_rank_never_reinitialises_a_module_the_caller_owns(batch):
    torch.manual_seed(0)
    mine = TinyCNN(width=4, num_classes=CLASSES)
    before = snapshot(mine)
    ranking = run({"mine": lambda: mine, "w8": tiny(8)}, batch, policy=ScoringPolicy("u", init="uniform"))
    assert ranking["mine"].status == "ok"
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())


def test_an_explicit_order_by_the_policy_does_not_use_is_reported(batch):
    with pytest.warns(UserWarning, match=r"order_by='gradsign' is not used: the 'real-model' policy orders by params"):
        ranking = run({"w4": tiny(4), "w8": tiny(8)}, batch, policy="real-model", order_by="gradsign")
    assert ranking.order_description == "params"


def test_policy_options_must_be_plain_values_for_registered_proxies():
    with pytest.raises(ValueError, match=r"proxy_options\['gradsign'\] must hold plain values.*'weights' or 'all'"):
        ScoringPolicy("p", proxy_options={"gradsign": {"params": lambda name, p: True}})
    with pytest.raises(KeyError, match="gradsign"):
        ScoringPolicy("p", proxy_options={"gradSign": {"reduction": "mean"}})


def test_a_partly_cached_resume_keeps_the_low_signal_warning(batch, tmp_path):
    policy = ScoringPolicy("a", init="as_built")
    first = run({"z": zero_residual}, batch, ["gradsign"], policy=policy, cache=tmp_path / "c")
    again = run({"z": zero_residual}, batch, ["gradsign", "params"], policy=policy, cache=tmp_path / "c")
    assert first["z"].warnings and again["z"].warnings == first["z"].warnings
    assert again["z"].signal == first["z"].signal


class Unpicklable(Wrapped):
    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        import threading

        self.lock = threading.Lock()  # deepcopy fails


def test_a_module_the_init_policy_cannot_copy_gets_nan_scores_and_the_fit_goes_on(batch, tmp_path):
    torch.manual_seed(0)
    cb = GradSignCallback(policy=ScoringPolicy("u", init="uniform"))
    with pytest.warns(UserWarning, match="could not be applied to a copy of the module"):
        fit(Unpicklable(ZeroResidual()), batch, cb, tmp_path)
    assert math.isnan(cb.scores["gradsign"])
    assert "pass policy='cell-space' to score it as built" in cb.results["gradsign"]["reason"]


def test_ordered_by_params_neighbours_within_twice_the_size_are_ties(batch):
    from gradsign_pl.triage import SIZE_TIE_RATIO

    cands = {"w4": tiny(4), "w5": tiny(5), "w16": tiny(16)}
    ranking = run(cands, batch, policy=ScoringPolicy("size", order_terms=("params",)))
    rows = [r for r in ranking.rows if r.status == "ok"]
    expected = [False] * len(rows)
    for i in range(len(rows) - 1):
        if rows[i].params < SIZE_TIE_RATIO * rows[i + 1].params:
            expected[i] = expected[i + 1] = True
    assert [r.tied for r in rows] == expected and any(expected) and not all(expected)
    assert "within 2x" in ranking.tie_rule and "little better than chance" in ranking.tie_rule
