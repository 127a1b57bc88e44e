"""ZiCo, MeCo and AZ-NAS on the real-model triage benchmark: does any of them rank real models better than their size?

The same 27 timm / torchvision models, the same trained accuracies (``benchmarks/results/triage``, committed, as
``triage_cifar10.py`` trained them: mean over 2-3 seeds) and the same first scoring batch as the triage study
(``docs/results/triage.md``). Each model is scored at initialisation by ``zico``, ``meco``, the four AZ-NAS
proxies and AZ-NAS's own log-rank aggregation, under the study's three init policies (seed 0); every score alone
and combined by log-rank with params / FLOPs is then judged by Kendall tau against accuracy, and the choice
among them by leave-one-family-out cross-validation (:func:`gradsign_pl.studies.policy_cv.cross_validate`), beside
params alone. Nothing is trained here: a model without a committed accuracy is left out.

Scores are cached in ``runs/triage_newer`` (resumes). Writes ``docs/results/triage_newer.md`` and ``.json``
(``--quick``: the 4 quick models' scores only, no report -- they have no committed accuracy).

    python benchmarks/triage_newer_proxies.py [--quick] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triage_cifar10 import NEWER_BEGIN, NEWER_END, newer_proxies_block, with_size_terms
from triage_models import MODELS, QUICK_MODELS, SCHEDULE, datamodule, read_trained, trained_log
from triage_scoring import builder, key, scoring_batches

from gradsign_pl.proxies import batch_fingerprint
from gradsign_pl.proxies.az_nas import COMPONENTS as AZ_COMPONENTS
from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.scoring.agreement import kendall_tau, spearman_rho
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.scoring.core import score_model
from gradsign_pl.scoring.policy import INIT_POLICIES, ScoringPolicy
from gradsign_pl.studies.policy_cv import cross_validate

ROOT = Path(__file__).resolve().parents[1]
NEWER = ("zico", "meco", *AZ_COMPONENTS)
PARAMS_TAU_TRIAGE = 0.534  # docs/results/triage.md: #params, plain Kendall tau on the same models and accuracies


def score_all(models: dict, batch, cache_dir: Path) -> ScoreCache:
    x, y = batch
    store = ScoreCache(cache_dir, {"batch": batch_fingerprint(x, y), "num_classes": 10, "loss_fn": "cross_entropy"})
    for n, (name, (_, spec)) in enumerate(models.items()):
        if (name, "params") not in store:
            sizes = score_model(builder(name, spec, 32), x, y, ["params", "flops"])
            for size in ("params", "flops"):
                store.add(name, size, sizes.scores[size])
        for init in INIT_POLICIES:
            wanted = [p for p in NEWER if (name, key(p, init)) not in store]
            if not wanted:
                continue
            scored = score_model(builder(name, spec, 32), x, y, wanted, policy=ScoringPolicy("grid", init=init))
            for p in wanted:
                r = scored.results[p]
                store.add(name, key(p, init), r.score, reason=scored.reasons.get(p), seconds=round(r.elapsed_s, 3))
        print(f"{n + 1}/{len(models)} {name}", flush=True)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="score the 4 quick models only; no report")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 location (default $GRADSIGN_DATA, ../shared/data)")
    args = parser.parse_args(argv)
    models = {n: MODELS[n] for n in QUICK_MODELS} if args.quick else MODELS
    run = ROOT / "runs" / ("triage_newer_quick" if args.quick else "triage_newer")
    run.mkdir(parents=True, exist_ok=True)
    dm = datamodule(args.data_dir, SCHEDULE)
    store = score_all(models, scoring_batches(dm, 1)[0], run / "scores")
    if args.quick:
        return 0

    trained = read_trained(trained_log(SCHEDULE))
    runs_of = {
        n: [r["test_acc"] for (m, _), r in sorted(trained.items()) if m == n and r.get("test_acc") is not None]
        for n in models
    }
    names = [n for n in models if len(runs_of[n]) >= 2]
    acc = np.array([np.mean(runs_of[n]) for n in names])
    families = [models[n][0] for n in names]
    single: dict[str, np.ndarray] = {s: np.array([store.score(n, s) for n in names]) for s in ("params", "flops")}
    for init in INIT_POLICIES:
        for p in NEWER:
            single[f"{p} init={init}"] = np.array([store.score(n, key(p, init)) for n in names])
        single[f"az_nas init={init}"] = rank_ensemble({p: single[f"{p} init={init}"] for p in AZ_COMPONENTS})
    pol = with_size_terms(single)
    finite = {k: v for k, v in pol.items() if np.isfinite(v).all()}
    rows = sorted(
        ({"policy": k, "tau": kendall_tau(v, acc), "rho": spearman_rho(v, acc)} for k, v in finite.items()),
        key=lambda r: -r["tau"],
    )
    singles = [k for k in finite if " + " not in k]
    scopes = {
        "params only (baseline)": ["params"],
        "the newer proxies alone (any one, any init)": [k for k in singles if k not in ("params", "flops")],
        "the newer proxies, with or without params/FLOPs": [k for k in finite if not k.startswith(("params", "flops"))]
        + ["params", "flops", "params + flops"],
    }
    cv = {}
    for scope, labels in scopes.items():
        res = cross_validate({k: finite[k] for k in labels if k in finite}, acc, families)
        cv[scope] = {"tau_cv": res.tau, "rho_cv": res.rho, "chosen_all": res.chosen_all, "n_policies": len(labels)}
    seconds = {
        p: float(np.mean([r["seconds"] for n in names if (r := store.get(n, key(p, "as_built"))) and r.get("seconds")]))
        for p in NEWER
    }
    dropped = sorted(set(pol) - set(finite))
    report = {
        "command": "python benchmarks/triage_newer_proxies.py",
        "models": names,
        "accuracy_runs": {n: runs_of[n] for n in names},
        "policies": rows,
        "cross_validation": cv,
        "dropped_non_finite": dropped,
        "seconds_per_model_as_built": seconds,
    }
    docs = ROOT / "docs" / "results"
    (docs / "triage_newer.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (docs / "triage_newer.md").write_text(markdown(report, len(names)))
    triage_md = docs / "triage.md"  # the study's page carries these rows beside its own
    text = triage_md.read_text() if triage_md.is_file() else ""
    begin, end = text.find(NEWER_BEGIN), text.find(NEWER_END)
    if begin >= 0 and end > begin:
        triage_md.write_text(text[:begin] + newer_proxies_block(report) + text[end + len(NEWER_END) :])
    print((docs / "triage_newer.md").read_text())
    return 0


def markdown(report: dict, n_models: int) -> str:
    def f(x):
        return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    by = {r["policy"]: r for r in report["policies"]}
    lines = [
        "# The newer proxies on real models (the triage benchmark)",
        "",
        f"Reproduce: `{report['command']}` (scores only; the accuracies are the triage study's committed trainings).",
        "",
        f"{n_models} timm / torchvision models of [triage.md](triage.md), CIFAR-10 at 32 px, accuracy = mean test "
        "accuracy over 2-3 training seeds; each proxy scored on the study's first batch at seed 0 under its three "
        "init policies. Kendall tau over all model pairs, and the leave-one-family-out cross-validated tau of "
        "choosing among the policies in a scope (the number that says whether the choice generalises to an "
        f"unseen family). #params alone: tau {f(by['params']['tau'])} (triage.md: {PARAMS_TAU_TRIAGE}).",
        "",
        "| choice among | policies | CV tau | CV rho | chosen on all families |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {scope} | {v['n_policies']} | {f(v['tau_cv'])} | {f(v['rho_cv'])} | `{v['chosen_all']}` |"
            for scope, v in report["cross_validation"].items()
        ],
        "",
        "Each proxy alone (plain tau / rho over all models; init = as_built, the models' own initialisation):",
        "",
        "| proxy | tau | rho | s / model |",
        "| --- | --- | --- | --- |",
        *[
            f"| {p} | {f(row.get('tau'))} | {f(row.get('rho'))} | {f(report['seconds_per_model_as_built'].get(p))} |"
            for p in (*NEWER, "az_nas")
            for row in [by.get(f"{p} init=as_built", {})]
        ],
        "",
        "Top 10 policies by plain tau (selected on the same models they are judged on: optimistic, unlike CV):",
        "",
        "| policy | tau | rho |",
        "| --- | --- | --- |",
        *[f"| `{r['policy']}` | {f(r['tau'])} | {f(r['rho'])} |" for r in report["policies"][:10]],
        "",
        f"Policies left out because some model's score is not finite: {len(report['dropped_non_finite'])}"
        + (f" (e.g. `{report['dropped_non_finite'][0]}`)." if report["dropped_non_finite"] else "."),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
