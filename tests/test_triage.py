"""rank(): scoring candidates on one batch, budgets, failure isolation, seeds, resume, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gradsign_pl import score
from gradsign_pl.data.datamodules import DigitsDataModule
from gradsign_pl.proxies._registry import _PROXIES
from gradsign_pl.triage import first_batch, rank
from tests.models import BrokenCNN, TinyCNN


def tiny(width):
    def factory(num_classes, in_chans):
        return TinyCNN(num_classes, in_chans, width)

    return factory


def nan_model(num_classes, in_chans):
    net = TinyCNN(num_classes, in_chans, 4)
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    return net


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)


def test_ranks_by_the_first_proxy_keeps_top_k_and_isolates_failures(batch):
    cands = {
        "w4": tiny(4),
        "w16": tiny(16),
        "w8": tiny(8),
        "broken": BrokenCNN,
        "nan": nan_model,
        "wrong": "timm:resnet18",
    }
    cands["wrong"] = {"class_path": "tests.models.TinyCNN", "init_args": {"width": 2}}
    ranking = rank(cands, batch, ["params", "gradsign"], top_k=2, num_classes=5, progress=False, policy="cell-space")
    # ordered by params: the nan GradSign of "nan" does not stop it ranking (same size as w4: a tie, input order)
    assert [r.name for r in ranking.rows[:5]] == ["w16", "w8", "w4", "nan", "wrong"]
    assert [r.rank for r in ranking.rows[:5]] == [1, 2, 3, 4, 5]
    assert ranking["w4"].tied and ranking["nan"].tied and not ranking["w8"].tied
    assert [r.name for r in ranking.kept] == ["w16", "w8"]
    assert ranking["w4"].reason == "not in the top 2"
    failed = {r.name: r.reason for r in ranking.failures}
    assert set(failed) == {"broken"}
    assert "forward is broken on purpose" in failed["broken"]
    assert any(w.startswith("gradsign could not be scored") for w in ranking["nan"].warnings)
    assert "non-finite" in ranking["nan"].failed_proxies["gradsign"]
    # ordered by GradSign, the same candidate fails, with the reason
    by_gradsign = rank(
        cands, batch, ["params", "gradsign"], order_by="gradsign", num_classes=5, progress=False, policy="cell-space"
    )
    assert by_gradsign["nan"].status == "failed" and by_gradsign["nan"].reason.startswith("gradsign: ")
    # the numbers are the proxies' own
    torch.manual_seed(0)
    expected = score("gradsign", TinyCNN(5, 3, 16), *batch).score
    assert ranking["w16"].scores["gradsign"] == expected
    assert ranking["w16"].params == sum(p.numel() for p in TinyCNN(5, 3, 16).parameters())
    assert ranking["w16"].flops > ranking["w4"].flops > 0


def test_budgets_and_seeds(batch):
    cands = {"w4": tiny(4), "w32": tiny(32)}
    ranking = rank(
        cands, batch, ["gradsign"], seeds=3, max_params=1000, num_classes=5, progress=False, policy="cell-space"
    )
    assert ranking["w32"].status == "over budget" and "max_params" in ranking["w32"].reason
    assert ranking["w4"].kept and ranking["w4"].spread["gradsign"] > 0
    seeds = []
    for s in range(3):
        torch.manual_seed(s)
        seeds.append(score("gradsign", TinyCNN(5, 3, 4), *batch).score)
    assert ranking["w4"].scores["gradsign"] == pytest.approx(sum(seeds) / 3)
    flops_cap = rank(cands, batch, ["params"], max_flops=ranking["w4"].flops, num_classes=5, progress=False)
    assert flops_cap["w32"].status == "over budget" and "max_flops" in flops_cap["w32"].reason


def test_does_not_touch_the_global_rng(batch):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    rank({"a": tiny(4), "b": tiny(8)}, batch, ["gradsign", "synflow"], num_classes=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_resumes_from_the_cache_without_recomputing(batch, tmp_path, monkeypatch):
    cands = {"a": tiny(4), "b": tiny(8), "broken": BrokenCNN}
    first = rank(cands, batch, ["gradsign", "synflow"], cache=tmp_path, num_classes=5, progress=False)
    calls = []
    for name in ("gradsign", "synflow"):
        info = _PROXIES[name]
        monkeypatch.setitem(_PROXIES, name, type(info)(name, lambda *a, **k: calls.append(1), info.per_sample))
    second = rank(cands, batch, ["gradsign", "synflow"], cache=tmp_path, num_classes=5, progress=False)
    assert calls == []
    assert second.records() == [dict(r, seconds=s["seconds"]) for r, s in zip(first.records(), second.records())]
    monkeypatch.undo()
    # another batch: the cached scores are not reused (a warning names what changed), the new ones join the cache
    with pytest.warns(UserWarning, match=r"scoring settings changed .*batch: '"):
        third = rank(cands, (batch[0] + 1, batch[1]), ["gradsign"], cache=tmp_path, num_classes=5, progress=False)
    fresh = rank(cands, (batch[0] + 1, batch[1]), ["gradsign"], num_classes=5, progress=False)
    assert [r.scores for r in third.rows] != [r.scores for r in first.rows]
    assert [(r.name, r.scores) for r in third.rows] == [(r.name, r.scores) for r in fresh.rows]


def test_a_changed_spec_is_scored_again_under_its_own_key(batch, tmp_path):
    small = {"m": {"class_path": "tests.models.TinyCNN", "init_args": {"width": 2}}}
    wide = {"m": {"class_path": "tests.models.TinyCNN", "init_args": {"width": 8}}}
    a = rank(small, batch, ["gradsign"], cache=tmp_path, num_classes=5, progress=False, policy="cell-space")
    b = rank(wide, batch, ["gradsign"], cache=tmp_path, num_classes=5, progress=False, policy="cell-space")
    assert a["m"].params < b["m"].params and a["m"].scores != b["m"].scores
    assert (
        b["m"].params == rank(wide, batch, ["gradsign"], num_classes=5, progress=False, policy="cell-space")["m"].params
    )


def test_order_by_ensemble(batch):
    ranking = rank(
        {"a": tiny(4), "b": tiny(16)}, batch, ["params", "synflow"], order_by="ensemble", num_classes=5, progress=False
    )
    assert ranking.order_by == "ensemble" and ranking.rows[0].name == "b"


def test_outputs(batch, tmp_path):
    ranking = rank({"a": tiny(4), "broken": BrokenCNN}, batch, ["gradsign"], seeds=2, num_classes=5, progress=False)
    rows = ranking.to_csv(tmp_path / "r.csv").read_text().splitlines()
    assert rows[0] == "rank,name,status,kept,gradsign,gradsign_std,params,flops,tied,signal,warnings,seconds,reason"
    assert rows[1].startswith("1,a,ok,True,") and rows[2].startswith(",broken,failed,False,,,")
    data = json.loads(ranking.to_json(tmp_path / "r.json").read_text())
    assert data["candidates"][1]["gradsign"] is None and data["seeds"] == 2
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(ranking)
    text = console.export_text()
    assert "broken" in text and "forward is broken on purpose" in text


def test_bad_requests(batch):
    with pytest.raises(ValueError, match="at least one registered proxy"):
        rank({"a": tiny(4)}, batch, [], num_classes=5)
    with pytest.raises(ValueError, match="order_by='snip'"):
        rank({"a": tiny(4)}, batch, ["gradsign"], order_by="snip", num_classes=5)
    with pytest.raises(ValueError, match="list them and pass order_by='ensemble'"):
        rank({"a": tiny(4)}, batch, ["ensemble"], num_classes=5)
    with pytest.raises(ValueError, match="'az_nas' combines other proxies"):
        rank({"a": tiny(4)}, batch, ["params", "az_nas"], num_classes=5)
    with pytest.raises(ValueError, match="pass num_classes"):
        rank({"a": tiny(4)}, batch, ["gradsign"])
    with pytest.raises(ValueError, match="unique"):
        rank(["timm:resnet18", "timm:resnet18"], batch, ["params"], num_classes=5)
    with pytest.raises(ValueError, match="pretrained"):
        rank([{"model": "timm:resnet18", "kwargs": {"pretrained": True}}], batch, ["params"], num_classes=5)


def test_first_batch_sources(batch):
    x, y = batch
    assert first_batch(DataLoader(TensorDataset(x, y), batch_size=4))[0].shape == (4, 3, 8, 8)
    dict_loader = [{"image": x, "label": y}]
    assert first_batch(dict_loader, max_samples=3)[1].shape == (3,)
    dm = DigitsDataModule(batch_size=16, image_size=8)
    xs, ys = first_batch(dm)
    assert xs.shape == (16, 1, 8, 8) and ys.dtype == torch.long
    with pytest.raises(ValueError, match="batch_transform"):
        first_batch([[1, 2, 3]])
    with pytest.raises(TypeError, match="LightningDataModule"):
        first_batch(42)


def test_datamodule_num_classes_and_resize():
    dm = DigitsDataModule(batch_size=32, image_size=16)
    ranking = rank({"a": tiny(4)}, dm, ["params"], progress=False)
    assert ranking.batch["shape"] == [32, 1, 16, 16] and ranking.batch["num_classes"] == 10
    assert not math.isnan(ranking["a"].scores["params"])


def test_first_batch_is_reproducible_and_keeps_the_callers_rng():
    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(3), i % 2  # random "augmentation" from the global RNG

    loader = DataLoader(Augmented(), batch_size=4)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = first_batch(loader)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(6)
    b = first_batch(loader)
    assert torch.equal(a[0], b[0])
