"""MasterNet search numbers for docs/zen_search.md: conformance, scoring cost, and the small CIFAR-10 pipeline.

Parts (all by default):

- ``conformance``: analytic parameters / FLOPs of the 12 published ZenNets (``zennet_structures.csv``) against the
  published figures, and parameters against ``sum(p.numel())`` of the built network (networks up to 40M params).
- ``cost``: seconds to score one candidate (build + proxy, median of 3) with gradsign and zen, at 32 px (the
  CIFAR recipe's initial structure) and 224 px (ZenNet-400M, the ImageNet recipe's budget), on this machine.
- ``work``: multiply-accumulates of one ImageNet distillation step per image (student forward + backward counted as
  3 forwards, teacher ``tf_efficientnet_b3`` forward at 320 px) and of the ImageNet recipe's 20 epochs: a count,
  not a timing.
- ``cifar``: runs ``gradsign-fit --config recipes/zen_cifar10.yaml`` (resumes if ``run_dir`` holds a finished
  part) and collects the search curve, the found structure, the teacher and the students' accuracies.
  Teacher accuracy against lift, with 2 seeds and a ResNet-18 control, is ``benchmarks/zen_distill_lift.py``'s
  page ``docs/results/zen_distill.md``.

Writes ``docs/results/zen.md`` and ``docs/results/zen.json`` (``--quick``: batch 8 for the cost part, a 30-iteration
search with 1-epoch training in ``runs/zen_quick``, results under that run directory).

    python benchmarks/zen_search.py [--quick] [--parts conformance cost work cifar]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gradsign_pl.cli.fit import read_jsonl_records
from gradsign_pl.data.batches import load_batch
from gradsign_pl.proxies import score
from gradsign_pl.spaces.zen import (
    CIFAR_INITIAL_STRUCTURE,
    MasterNet,
    count_flops,
    count_layers,
    count_params,
    published_structures,
)

ROOT = Path(__file__).resolve().parents[1]


def conformance() -> list[dict]:
    rows = []
    for r in published_structures():
        s, res, nc, se = r["structure"], r["resolution"], r["num_classes"], r["use_se"]
        # the published 400M / 600M figures are those of the networks without SE (see docs/zen_search.md)
        counted_se = se and "flops400M" not in r["name"] and "flops600M" not in r["name"]
        params, flops = count_params(s, nc, use_se=counted_se), count_flops(s, res, nc, use_se=counted_se)
        built = None
        if params < 40e6:
            built = sum(p.numel() for p in MasterNet(s, nc, use_se=counted_se).parameters())
        rows.append(
            {
                "name": r["name"],
                "use_se_counted": counted_se,
                "published_params": r["published_params"],
                "params": params,
                "built_params": built,
                "published_flops": r["published_flops"],
                "flops": flops,
                "layers": count_layers(s),
                "params_rel_diff": params / r["published_params"] - 1,
                "flops_rel_diff": flops / r["published_flops"] - 1,
            }
        )
    return rows


def _time_scoring(
    structure: str, proxy: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, use_se: bool, repeats: int = 3
) -> float:
    times = []
    for i in range(repeats):
        torch.manual_seed(i)
        t0 = time.perf_counter()
        net = MasterNet(structure, num_classes, use_se=use_se)
        score(proxy, net, x, y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cost(quick: bool) -> list[dict]:
    n = 8 if quick else 64
    rows = []
    x32, y32 = load_batch("cifar10", n=n, seed=0)
    zennet400 = next(r for r in published_structures() if r["name"] == "zennet_imagenet1k_flops400M_res224")
    g = torch.Generator().manual_seed(0)
    x224, y224 = torch.randn(n, 3, 224, 224, generator=g), torch.randint(0, 1000, (n,), generator=g)
    cases = [
        ("CIFAR initial structure, 32 px", CIFAR_INITIAL_STRUCTURE, x32, y32, 10, False),
        ("ZenNet-400M (SE), 224 px", zennet400["structure"], x224, y224, 1000, True),
    ]
    for label, s, x, y, nc, se in cases:
        for proxy in ("gradsign", "zen"):
            seconds = _time_scoring(s, proxy, x, y, nc, se, repeats=1 if (quick or nc == 1000) else 3)
            rows.append(
                {
                    "case": label,
                    "proxy": proxy,
                    "batch": n,
                    "seconds": seconds,
                    "params": count_params(s, nc, use_se=se),
                    "flops": count_flops(s, x.shape[-1], nc, use_se=se),
                }
            )
            print(f"{label:34s} {proxy:9s} batch {n}: {seconds:.2f} s per candidate", flush=True)
    return rows


def work() -> dict:
    from gradsign_pl.candidates import build_model
    from gradsign_pl.proxies.size import count_flops as measured_ops

    zennet400 = next(r for r in published_structures() if r["name"] == "zennet_imagenet1k_flops400M_res224")
    student = count_flops(zennet400["structure"], 224, 1000, use_se=True, convention="macs")
    teacher_net = build_model("timm:tf_efficientnet_b3", num_classes=1000).eval()
    teacher, _ = measured_ops(teacher_net, torch.zeros(1, 3, 320, 320))  # NB-201 convention: 1 per MAC + small terms
    per_image = 3 * student + teacher
    images, epochs = 1_281_167, 20
    return {
        "student_macs": student,
        "teacher_ops_320px": teacher,
        "per_image": per_image,
        "imagenet_train_images": images,
        "epochs": epochs,
        "total": per_image * images * epochs,
    }


def cifar(quick: bool) -> dict:
    run_dir = ROOT / "runs" / ("zen_quick" if quick else "zen_cifar10")
    args = [
        sys.executable,
        "-m",
        "gradsign_pl.cli.fit",
        "--config",
        str(ROOT / "recipes" / "zen_cifar10.yaml"),
        "--run_dir",
        str(run_dir),
    ]
    if quick:
        args += [
            "--search.iterations",
            "30",
            "--trainer.max_epochs",
            "1",
            "--distill.train_teacher_epochs",
            "1",
            "--distill.checkpoint",
            str(run_dir / "teacher.pt"),
            "--data.init_args.train_size",
            "2000",
        ]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    report = json.loads((run_dir / "report.json").read_text())
    trained = list(read_jsonl_records(run_dir / "trained.jsonl").values())
    teacher = report.get("distillation") or {}
    sidecar = Path(str(teacher.get("checkpoint"))).with_name(Path(str(teacher.get("checkpoint"))).name + ".json")
    if sidecar.is_file():
        teacher["seconds"] = json.loads(sidecar.read_text()).get("seconds")
    return {
        "run_dir": str(run_dir.relative_to(ROOT)),
        "seconds_this_invocation": seconds,
        "search": report["search"],
        "teacher": teacher,
        "trained": trained,
    }


def _pct(x: float | None) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def markdown(results: dict, out: Path) -> str:
    lines = [
        "# MasterNet search: conformance, cost and the CPU pipeline",
        "",
        "Generated by `python benchmarks/zen_search.py`; CPU: 2 cores, no GPU.",
        "",
    ]
    if "conformance" in results:
        lines += [
            "## Published ZenNets",
            "",
            "Analytic counts (`count_params`, `count_flops`, ZenNAS's FLOPs convention) against the figures "
            "ZenNAS publishes; `built` is `sum(p.numel())` of the constructed MasterNet.",
            "",
            "| ZenNet | SE counted | params published | ours | built | FLOPs published | ours | layers |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results["conformance"]:
            built = f"{r['built_params'] / 1e6:.3f}M" if r["built_params"] is not None else "--"
            lines.append(
                f"| {r['name']} | {'yes' if r['use_se_counted'] else 'no'} | "
                f"{r['published_params'] / 1e6:g}M | {r['params'] / 1e6:.3f}M | {built} | "
                f"{r['published_flops'] / 1e6:g}M | {r['flops'] / 1e6:.2f}M | {r['layers']} |"
            )
        lines.append("")
    if "cost" in results:
        lines += [
            "## Scoring cost per candidate",
            "",
            "Build + proxy on this CPU (2 threads), one batch:",
            "",
            "| structure | proxy | batch | seconds | params (M) | MFLOPs |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in results["cost"]:
            lines.append(
                f"| {r['case']} | {r['proxy']} | {r['batch']} | {r['seconds']:.2f} | "
                f"{r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.1f} |"
            )
        lines.append("")
    if "work" in results:
        w = results["work"]
        lines += [
            "## Distillation work on ImageNet (a count)",
            "",
            f"Per training image: student ZenNet-400M-SE forward + backward = 3 x {w['student_macs'] / 1e6:.0f}M "
            f"MACs, teacher tf_efficientnet_b3 forward at 320 px = {w['teacher_ops_320px'] / 1e6:.0f}M "
            f"operations; {w['per_image'] / 1e9:.2f} G per image, {w['total'] / 1e15:.1f} x 10^15 for "
            f"{w['epochs']} epochs of {w['imagenet_train_images']:,} images.",
            "",
        ]
    for part in ("cifar",):
        if part not in results:
            continue
        c = results[part]
        s = c["search"]
        summary = s.get("history_summary", {})
        title = "`recipes/zen_cifar10.yaml` on CIFAR-10"
        lines += [
            f"## {title}",
            "",
            f"Run directory `{c['run_dir']}`; this invocation took {c['seconds_this_invocation']:.0f} s.",
            "",
            f"Search: {summary.get('evaluated')} of {summary.get('iterations')} mutations scored with "
            f"{s.get('extra', {}).get('proxy')}, rejected {summary.get('rejected')}; best score "
            f"{summary.get('first_best_score'):.4g} -> {summary.get('final_best_score'):.4g} (reached at "
            f"iteration {summary.get('iteration_best_reached')}).",
            "",
            f"Best structure: `{s['top'][0]['structure']}` ({s['top'][0]['params'] / 1e6:.3f}M params, "
            f"{s['top'][0]['flops'] / 1e6:.1f} MFLOPs, {s['top'][0]['layers']} layers).",
            "",
        ]
        plot = out / f"{part}_best_score.png"
        if plot.is_file():
            lines += [f"![best score over iterations]({plot.name})", ""]
        t = c.get("teacher") or {}
        trained_for = f", trained here in {t['seconds']:.0f} s" if t.get("seconds") else ""
        lines += [
            f"Teacher `{t.get('model')}`: {_pct(t.get('test_acc'))}% test accuracy{trained_for}.",
            "",
            "| run | teacher | test acc (%) | val acc (%) | seconds |",
            "|---|---|---:|---:|---:|",
        ]
        for r in c["trained"]:
            lines.append(
                f"| {r['name']} | {r.get('teacher') or 'none'} | {_pct(r.get('test_acc'))} | "
                f"{_pct(r.get('val_acc'))} | {r.get('seconds', 0):.0f} |"
            )
        lines += [
            "",
            "Teacher accuracy against lift over 2 seeds, logit KD and the feature term, with a ResNet-18 control: "
            "[zen_distill.md](zen_distill.md).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings; results under runs/zen_quick")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["conformance", "cost", "work", "cifar"],
        choices=["conformance", "cost", "work", "cifar"],
    )
    args = parser.parse_args(argv)
    out = ROOT / ("runs/zen_quick" if args.quick else "docs/results")
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "zen.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if "conformance" in args.parts:
        results["conformance"] = conformance()
    if "cost" in args.parts:
        results["cost"] = cost(args.quick)
    if "work" in args.parts:
        results["work"] = work()
    if "cifar" in args.parts:
        results["cifar"] = cifar(args.quick)
    for part in ("cifar",):
        if part in results and (ROOT / results[part]["run_dir"] / "search" / "best_score.png").is_file():
            shutil.copyfile(
                ROOT / results[part]["run_dir"] / "search" / "best_score.png", out / f"{part}_best_score.png"
            )
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results, out)
    (out / "zen.md").write_text(text)
    print(text)
    print(f"written: {out / 'zen.md'}, {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
