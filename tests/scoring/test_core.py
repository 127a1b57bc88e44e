"""The one scoring path: every face gives the same numbers; failures become reasons; options are checked early."""

from __future__ import annotations

import functools
import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from gradsign_pl import GradSignCallback, ScoringPolicy, rank, score
from gradsign_pl.proxies import check_options
from gradsign_pl.proxies._registry import _PROXIES
from gradsign_pl.scoring.batch import first_batch, unpack_batch
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.scoring.core import score_model
from gradsign_pl.search.evolution import proxy_fitness
from gradsign_pl.spaces import create_space
from gradsign_pl.studies.correlation import score_archs
from tests.models import TinyCNN


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)


def test_every_face_gives_the_same_score_for_the_same_model_batch_and_seed(batch, tmp_path):
    """rank(), the callback, the evolutionary fitness and the NB-201 study all go through score_model."""
    space = create_space("zen")
    structure = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
    torch.manual_seed(3)
    expected = score("gradsign", space.build(structure, num_classes=5, in_chans=3), *batch).score

    assert proxy_fitness("gradsign", *batch, space, num_classes=5, in_chans=3, init_seed=3)(structure) == expected
    via_core = score_model(lambda: space.build(structure, num_classes=5, in_chans=3), *batch, ["gradsign"], seed=3)
    assert via_core.scores["gradsign"] == expected
    ranked = rank({"z": f"zen:{structure}"}, batch, ["gradsign"], num_classes=5, progress=False, policy="cell-space")
    torch.manual_seed(0)  # rank() seeds 0..seeds-1
    assert (
        ranked["z"].scores["gradsign"]
        == score("gradsign", space.build(structure, num_classes=5, in_chans=3), *batch).score
    )

    class Study:
        def build(self, index, dataset):
            return space.build(structure, num_classes=5, in_chans=3)

    cache = ScoreCache(tmp_path, {"t": 1})
    assert score_archs(Study(), [0], ["gradsign"], *batch, cache, dataset="x", seed=3, device=torch.device("cpu")) == 1
    assert cache.score(0, "gradsign") == expected

    module = _Wrapped(space.build(structure, num_classes=5, in_chans=3))
    torch.manual_seed(3)
    module = _Wrapped(space.build(structure, num_classes=5, in_chans=3))
    cb = GradSignCallback(policy="cell-space", max_samples=None)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(list(zip(*batch)), batch_size=8))
    assert cb.scores["gradsign"] == expected


class _Wrapped(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_caller_model_and_rng_are_untouched_and_a_module_is_never_reinitialised_in_place(batch):
    net = TinyCNN(5, 3, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(11)
    state = torch.get_rng_state()
    scored = score_model(net, *batch, ["gradsign", "synflow"], policy=ScoringPolicy("u", init="uniform"), seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(math.isfinite(v) for v in scored.scores.values())
    assert scored.params == sum(p.numel() for p in net.parameters())


def test_a_failure_is_a_reason_per_proxy_and_a_broken_build_a_reason_for_all(batch):
    def broken():
        raise RuntimeError("no such layer")

    scored = score_model(broken, *batch, ["gradsign", "params"])
    assert scored.error.startswith("build/forward failed: RuntimeError: no such layer")
    assert all(math.isnan(v) for v in scored.scores.values()) and set(scored.reasons) == {"gradsign", "params"}

    nan_net = TinyCNN(5, 3, 4)
    with torch.no_grad():
        nan_net.head.weight.fill_(float("nan"))
    scored = score_model(nan_net, *batch, ["gradsign", "params"])
    assert scored.error is None and math.isnan(scored.scores["gradsign"]) and math.isfinite(scored.scores["params"])
    assert "non-finite" in scored.reasons["gradsign"] and "params" not in scored.reasons


def test_out_of_memory_is_retried_with_smaller_chunks_and_marked_transient(batch, monkeypatch):
    real = _PROXIES["gradsign"]
    chunks = []

    def tight(model, inputs, targets, *, chunk_size=None, **options):
        chunks.append(chunk_size)
        if chunk_size is None or chunk_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real.fn(model, inputs, targets, chunk_size=chunk_size, **options)

    tight.__signature__ = __import__("inspect").signature(real.fn)
    monkeypatch.setitem(_PROXIES, "gradsign", type(real)("gradsign", tight, True))
    scored = score_model(lambda: TinyCNN(5, 3, 4), *batch, ["gradsign"])
    assert chunks == [None, 8, 4, 2] and scored.results["gradsign"].chunk_size <= 2
    assert math.isfinite(scored.scores["gradsign"]) and not scored.transient
    assert "oom_retry" in scored.results["gradsign"].options

    def never(model, inputs, targets, *, chunk_size=None, **options):
        raise torch.OutOfMemoryError("CUDA out of memory")

    never.__signature__ = tight.__signature__
    monkeypatch.setitem(_PROXIES, "gradsign", type(real)("gradsign", never, True))
    scored = score_model(lambda: TinyCNN(5, 3, 4), *batch, ["gradsign"])
    assert scored.transient == {"gradsign"} and "out of memory" in scored.reasons["gradsign"]


def test_an_out_of_memory_score_is_not_cached_as_final(batch, tmp_path, monkeypatch):
    real = _PROXIES["gradsign"]

    def never(model, inputs, targets, **options):
        raise MemoryError("out of memory")

    never.__signature__ = __import__("inspect").signature(real.fn)
    monkeypatch.setitem(_PROXIES, "gradsign", type(real)("gradsign", never, True))
    first = rank(
        {"a": lambda num_classes, in_chans: TinyCNN(num_classes, in_chans, 4)},
        batch,
        ["gradsign"],
        cache=tmp_path,
        num_classes=5,
        progress=False,
        policy="cell-space",
        order_by="gradsign",
    )
    assert first["a"].status == "failed" and "out of memory" in first["a"].reason
    monkeypatch.undo()
    again = rank(
        {"a": lambda num_classes, in_chans: TinyCNN(num_classes, in_chans, 4)},
        batch,
        ["gradsign"],
        cache=tmp_path,
        num_classes=5,
        progress=False,
        policy="cell-space",
        order_by="gradsign",
    )
    assert again["a"].status == "ok" and math.isfinite(again["a"].scores["gradsign"])


@pytest.mark.parametrize("where", ["policy", "rank", "callback", "fitness"])
def test_a_misspelt_proxy_option_is_refused_where_it_is_read(batch, where):
    bad = {"gradsign": {"bn_polcy": "batch"}}
    with pytest.raises(ValueError, match="proxy 'gradsign' has no option 'bn_polcy'; did you mean 'bn_policy'"):
        if where == "policy":
            ScoringPolicy("x", proxy_options=bad)
        elif where == "rank":
            rank(["timm:resnet18"], batch, ["gradsign"], options=bad, num_classes=5, progress=False)
        elif where == "callback":
            GradSignCallback(options=bad)
        else:
            proxy_fitness("gradsign", *batch, create_space("zen"), num_classes=5, in_chans=3, bn_polcy="batch")


def test_option_values_outside_a_literal_and_options_of_size_proxies_are_refused():
    with pytest.raises(ValueError, match=r"gradsign.reduction must be one of \['sum', 'mean', 'active'\]"):
        check_options("gradsign", {"reduction": "median"})
    with pytest.raises(ValueError, match="proxy 'params' has no option 'foo'"):
        check_options("params", {"foo": 1})
    with pytest.raises(ValueError, match="proxy 'flops' has no option 'per_layer'"):
        check_options("flops", {"per_layer": True})
    assert check_options("gradsign", {"params": lambda name, p: True, "bn_policy": "batch"})  # predicates pass
    with pytest.raises(TypeError, match="flops"):  # the proxy itself refuses it too, not silently ignoring it
        score("flops", TinyCNN(5, 3, 4), torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), chunk_size=4)


class _Dicts(Dataset):
    def __init__(self, batch):
        self.x, self.y = batch

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"images": self.x[i], "labels": self.y[i]}


def test_one_unpacker_for_every_face(batch, tmp_path):
    loader = DataLoader(_Dicts(batch), batch_size=8)
    x, y = first_batch(loader)
    assert torch.equal(x, batch[0]) and torch.equal(y, batch[1])
    ranked = rank(
        {"a": lambda num_classes, in_chans: TinyCNN(num_classes, in_chans, 4)},
        loader,
        ["gradsign"],
        num_classes=5,
        progress=False,
    )
    assert ranked["a"].status == "ok"
    with pytest.raises(ValueError, match=r"cannot tell inputs from targets.*a tuple of 3 items.*batch_transform"):
        unpack_batch((batch[0], batch[1], batch[1]))
    assert unpack_batch((batch[0], batch[1], batch[1]), lambda b: (b[0], b[2]))[1] is batch[1]


def test_one_batch_given_directly_is_read_like_a_training_step_batch(batch):
    """A dict batch given to first_batch / rank() directly is a batch, not a loader; a 3-tuple says it is one."""
    x, y = first_batch({"images": batch[0], "labels": batch[1]})
    assert x is batch[0] and y is batch[1]
    ranked = rank(
        {"a": functools.partial(tiny_cnn_of_width, 4)},
        {"x": batch[0], "y": batch[1]},
        ["params"],
        num_classes=5,
        progress=False,
    )
    assert ranked["a"].status == "ok"
    with pytest.raises(ValueError, match=r"cannot tell inputs from targets.*a tuple of 3 items"):
        first_batch((batch[0], batch[1], batch[1]))
    with pytest.raises(ValueError, match=r"cannot tell inputs from targets.*keys \['images', 'lbl'\]"):
        first_batch({"images": batch[0], "lbl": batch[1]})
    with pytest.raises(TypeError, match=r"expected one batch .*a DataLoader or a LightningDataModule, got int"):
        first_batch(3)


def tiny_cnn_of_width(width, num_classes, in_chans):
    return TinyCNN(num_classes, in_chans, width)


def test_rank_refuses_no_candidates_and_a_ranking_iterates_best_first(batch):
    with pytest.raises(ValueError, match="no candidates to rank"):
        rank([], batch, ["params"], num_classes=5)
    ranking = rank(
        {n: functools.partial(tiny_cnn_of_width, w) for n, w in (("small", 2), ("big", 16), ("mid", 6))},
        batch,
        ["params"],
        num_classes=5,
        progress=False,
        policy="cell-space",
    )
    assert [r.name for r in ranking] == ["big", "mid", "small"] and len(ranking) == 3
    with pytest.raises(TypeError, match="index a Ranking by candidate name"):
        ranking[0]


def test_the_csv_has_one_column_per_score(batch, tmp_path):
    ranking = rank(
        {"a": lambda num_classes, in_chans: TinyCNN(num_classes, in_chans, 4)},
        batch,
        ["gradsign", "params", "flops"],
        num_classes=5,
        progress=False,
    )
    header = ranking.to_csv(tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert len(header) == len(set(header)) and header.count("params") == 1 and header.count("flops") == 1
