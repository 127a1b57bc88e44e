"""Speed and memory of ``gradsign_pl.gradsign`` against the GradSign authors' per-sample loop.

For every configuration (model, input size ``px`` x ``px``, batch size ``n``) three methods run on the same model
(built under ``torch.manual_seed(0)``) and the same batch (``torch.manual_seed(1)``: ``randn(n, 3, px, px)``
inputs, ``randint(0, 10, (n,))`` targets):

* ``engine``: ``gradsign_pl.gradsign(model, x, y)`` with default options (vmap over per-sample gradients);
* ``official_loop``: the authors' style -- deepcopy, train mode, one forward/backward per sample, Conv2d/Linear
  weight gradients stacked into an n x m NumPy array, ``score = nansum(|sum_i sign(G_i)|)``;
* ``batched``: one ordinary batched forward+backward of the batch on a train-mode deepcopy (the practical floor).

All three times include the deepcopy of the model. Units: time in seconds (wall clock, ``time.perf_counter``;
median of ``--repeats`` timed runs after ``--warmup`` untimed runs, default 3 and 1; ``--quick``: one timed
run after one warm-up -- the first ``gradsign`` call in a process pays a one-off vmap set-up cost); memory in MB
(2**20 bytes; GB = 1024 MB) -- on CPU the peak resident set size (``ru_maxrss``) above the RSS measured after
building model and batch, on CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated before the method.
Every (configuration, method) pair runs in its own subprocess, so each peak belongs to one method only.

Run from the repository root::

    python benchmarks/bench_gradsign.py            # full run -> benchmarks/results/gradsign_speed.{json,md}
    python benchmarks/bench_gradsign.py --quick    # smoke run -> benchmarks/results/gradsign_speed_quick.{json,md}
    python benchmarks/bench_gradsign.py --zoo      # 11 timm models at 224 px, n=32 -> gradsign_speed_zoo.{json,md}
    python benchmarks/bench_gradsign.py --device cuda [--zoo]   # the same on a GPU -> ..._cuda.{json,md}

``--device cuda`` runs every method on the GPU and records CUDA peak memory; it has not been run yet (no GPU
machine was available to the sessions that wrote this script).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
METHODS = ("engine", "official_loop", "batched")
WORKER_TIMEOUT_S = 1500
RESULT_TAG = "BENCH_RESULT "
MB = 2**20


# ------------------------------------------------------------------------------------------ configurations


def make_config(model: str, px: int, n: int, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    return {"name": f"{model}-{px}px-n{n}", "model": model, "px": px, "n": n, "methods": list(methods)}


#: the 224 px zoo of real models (n = 32): speed against the authors' loop, memory against one batched step
ZOO = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "vit_tiny_patch16_224",
    "mobilenetv3_small_100",
    "convnext_atto",
    "regnetx_002",
    "densenet121",
    "ghostnet_100",
    "lcnet_050",
    "rexnet_100",
)


def configurations(quick: bool, zoo: bool = False) -> list[dict[str, Any]]:
    if zoo:
        return [make_config(name, 224, 32) for name in ZOO]
    if quick:
        return [make_config("nb201", 32, 16), make_config("nb201", 32, 64), make_config("resnet18", 64, 32)]
    configs = [make_config("nb201", 32, n) for n in (16, 64, 128)]
    for name in ("resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "resnet50"):
        configs += [make_config(name, px, 32) for px in (64, 224)]
    configs.append(make_config("resnet50", 224, 64, ("engine", "batched")))
    return configs


# ------------------------------------------------------------------------------------------------- methods


def run_engine(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    import gradsign_pl

    r = gradsign_pl.gradsign(model, x, y)
    return {
        "score": r.score,
        "engine": r.engine,
        "engine_reason": r.engine_reason,
        "chunk_size": r.chunk_size,
        "bn_policy": r.bn_policy,
        "bn_reason": r.bn_reason,
        "n_scored_params": r.n_params,
    }


def run_official_loop(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    net = copy.deepcopy(model)
    net.train()
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        out = net(x[[i]])
        F.cross_entropy(out, y[[i]]).backward()
        grads = [
            m.weight.grad.flatten() if m.weight.grad is not None else torch.zeros(m.weight.numel(), device=x.device)
            for m in net.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        rows.append(torch.cat(grads).cpu().numpy())
    G = np.stack(rows)
    return {"score": float(np.nansum(np.abs(np.sign(G).sum(axis=0)))), "n_scored_params": int(G.shape[1])}


def run_batched(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    net = copy.deepcopy(model)
    net.train()
    net.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return {"loss": float(loss.detach())}


RUNNERS: dict[str, Callable[[nn.Module, Tensor, Tensor], dict[str, Any]]] = {
    "engine": run_engine,
    "official_loop": run_official_loop,
    "batched": run_batched,
}


# -------------------------------------------------------------------------------------------------- worker


def build(model_name: str, px: int, n: int, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    if model_name == "nb201":
        from gradsign_pl.spaces.nb201 import NB201Network

        model: nn.Module = NB201Network(NB201_ARCH, num_classes=10)
    else:
        import timm

        kwargs = {"img_size": px} if model_name.startswith("vit") else {}
        model = timm.create_model(model_name, pretrained=False, num_classes=10, **kwargs)
    torch.manual_seed(1)
    x, y = torch.randn(n, 3, px, px), torch.randint(0, 10, (n,))
    return model.to(device), x.to(device), y.to(device)


def current_rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build model and batch, run one method ``warmup`` + ``repeats`` times; time and peak memory."""
    wanted = spec.get("device", "auto")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted)
    model, x, y = build(spec["model"], spec["px"], spec["n"], device)
    run = RUNNERS[spec["method"]]
    sync(device)
    base_rss_kb = current_rss_kb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    for _ in range(spec["warmup"]):
        info = run(model, x, y)
    times = []
    for _ in range(spec["repeats"]):
        sync(device)
        t0 = time.perf_counter()
        info = run(model, x, y)
        sync(device)
        times.append(time.perf_counter() - t0)
    host_peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss_kb) / 1024
    peak_mb = host_peak_mb
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base_cuda) / MB
    return {
        **info,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_mb": peak_mb,
        "host_peak_mb": host_peak_mb,
        "device": str(device),
        "model_params": sum(p.numel() for p in model.parameters()),
    }


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one (configuration, method) in a fresh interpreter; errors and timeouts become ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len(RESULT_TAG) :])


# ------------------------------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"


def fmt_mb(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def fmt_x(v: float | None) -> str:
    return "—" if v is None else f"{fmt(v)}x"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def metric(cfg: dict[str, Any], method: str, key: str) -> Any:
    return cfg["results"].get(method, {}).get(key)


HEADER = [
    "model",
    "px",
    "n",
    "params (M)",
    "engine s",
    "official loop s",
    "speed-up (loop/engine)",
    "batched fwd+bwd s",
    "engine / batched",
    "engine peak MB",
    "loop peak MB",
    "batched peak MB",
    "chunk size",
    "BN policy",
    "score agreement",
]


def table_row(cfg: dict[str, Any]) -> list[str]:
    e, lp, b = (metric(cfg, m, "median_s") for m in METHODS)
    params = next((r["model_params"] for r in cfg["results"].values() if "model_params" in r), None)
    se, sl = metric(cfg, "engine", "score"), metric(cfg, "official_loop", "score")
    agree = "—" if se is None or sl is None else f"{se:.0f} vs {sl:.0f} (rel {abs(se - sl) / max(abs(sl), 1):.1e})"
    errors = [f"{m}: {r['error']}" for m, r in cfg["results"].items() if "error" in r]
    return [
        cfg["model"],
        str(cfg["px"]),
        str(cfg["n"]),
        fmt(params / 1e6 if params else None),
        fmt(e),
        fmt(lp),
        fmt(ratio(lp, e)),
        fmt(b),
        fmt(ratio(e, b)),
        *(fmt_mb(metric(cfg, m, "peak_mb")) for m in METHODS),
        str(metric(cfg, "engine", "chunk_size") or "—"),
        str(metric(cfg, "engine", "bn_policy") or "—"),
        agree + ("; ERROR " + "; ".join(errors) if errors else ""),
    ]


def targets(configs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(target, PASS / MISS / not measured, the numbers) for the four performance targets."""
    by = {c["name"]: c for c in configs}

    def get(name: str, method: str, key: str) -> Any:
        return metric(by[name], method, key) if name in by else None

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else "PASS" if ok else "MISS"

    out = []
    e64, l64, b64 = (get("nb201-32px-n64", m, "median_s") for m in METHODS)
    sp = ratio(l64, e64)
    out.append(
        (
            "(a) NB-201 n=64: engine >= 4x faster than the official loop",
            verdict(None if sp is None else sp >= 4),
            f"loop {fmt(l64)} s / engine {fmt(e64)} s = {fmt_x(sp)}",
        )
    )
    eb = ratio(e64, b64)
    out.append(
        (
            "(b) NB-201 n=64: engine <= 2x batched fwd+bwd",
            verdict(None if eb is None else eb <= 2),
            f"engine {fmt(e64)} s / batched {fmt(b64)} s = {fmt_x(eb)}",
        )
    )
    me = ratio(get("nb201-32px-n128", "engine", "peak_mb"), get("nb201-32px-n16", "engine", "peak_mb"))
    ml = ratio(get("nb201-32px-n128", "official_loop", "peak_mb"), get("nb201-32px-n16", "official_loop", "peak_mb"))
    out.append(
        (
            "(c) NB-201: engine peak at n=128 <= 1.2x peak at n=16",
            verdict(None if me is None else me <= 1.2),
            f"engine {fmt_x(me)} (official loop {fmt_x(ml)})",
        )
    )
    zoo = [f"{name}-224px-n32" for name in ZOO]
    speed = {z: ratio(get(z, "official_loop", "median_s"), get(z, "engine", "median_s")) for z in zoo}
    speed = {z: v for z, v in speed.items() if v is not None}
    slow = [f"{z.split('-')[0]} {v:.2f}x" for z, v in speed.items() if v < 1]
    out.append(
        (
            f"(e) 224 px zoo, n=32 ({len(speed)} of {len(ZOO)} models measured): engine never slower than the loop",
            verdict(None if not speed else not slow),
            f"slowest {min(speed.values()):.2f}x; slower than the loop: {', '.join(slow) or 'none'}" if speed else "",
        )
    )
    mem = {z: ratio(get(z, "engine", "peak_mb"), get(z, "batched", "peak_mb")) for z in zoo}
    mem = {z: v for z, v in mem.items() if v is not None}
    heavy = [f"{z.split('-')[0]} {v:.2f}x" for z, v in mem.items() if v > 2]
    out.append(
        (
            f"(f) 224 px zoo, n=32 ({len(mem)} of {len(ZOO)} models measured): engine peak <= 2x batched fwd+bwd",
            verdict(None if not mem else not heavy),
            f"largest {max(mem.values()):.2f}x; over 2x: {', '.join(heavy) or 'none'}" if mem else "",
        )
    )
    pk = get("resnet50-224px-n64", "engine", "peak_mb")
    out.append(
        (
            "(d) ResNet-50 224 px n=64: engine peak <= 3 GB",
            verdict(None if pk is None else pk <= 3 * 1024),
            f"{fmt_mb(pk)} MB",
        )
    )
    return out


def machine_info(argv: list[str]) -> dict[str, Any]:
    import timm

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *argv]),
    }


def write_reports(prefix: Path, info: dict[str, Any], configs: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": info, "settings": settings, "configurations": configs}
    Path(f"{prefix}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# GradSign engine vs official per-sample loop",
        "",
        f"Command: `{info['command']}`",
        "",
        f"{info['date']} · {info['platform']} · {info['cpu_count']} CPUs · torch {info['torch']} "
        f"({info['torch_threads']} threads) · timm {info['timm']} · Python {info['python']}"
        + (f" · {info['cuda']}" if info["cuda"] else ""),
        "",
        f"Times: median of {settings['repeats']} run(s) after {settings['warmup']} warm-up, seconds. Peak memory: "
        f"MB (2^20 bytes) above baseline, {'CUDA allocated' if info['cuda'] else 'process RSS'}, one subprocess "
        "per method. Score agreement: engine score vs loop score, |difference| / loop score.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in table_row(c)) + " |" for c in configs]
    lines += ["", "## Targets", ""] + [f"- **{v}** {t}: {nums}" for t, v, nums in targets(configs)]
    Path(f"{prefix}.md").write_text("\n".join(lines) + "\n")


def print_table(configs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GradSign: engine vs official loop vs batched fwd+bwd")
    for h in HEADER:
        table.add_column(h, overflow="fold")
    for c in configs:
        table.add_row(*table_row(c))
    console = Console(width=max(Console().width, 230))
    console.print(table)
    for t, v, nums in targets(configs):
        console.print(f"[bold]{v}[/bold] {t}: {nums}")


# --------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="NB-201 n=16, 64 and resnet18 64 px; one timed run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 3; --quick: 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    parser.add_argument("--only", default=None, metavar="SUBSTRING", help="run configurations whose name contains it")
    parser.add_argument("--out", default=None, metavar="PREFIX", help="output prefix for .json and .md")
    parser.add_argument("--zoo", action="store_true", help=f"the 224 px, n=32 zoo of {len(ZOO)} real models")
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (auto: CUDA when present)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(RESULT_TAG + json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    warmup = args.warmup
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible here; run it on a GPU machine (or --device cpu)")
    suffix = "_zoo" if args.zoo else "_quick" if args.quick else ""
    suffix += "_cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else ""
    prefix = Path(args.out or f"benchmarks/results/gradsign_speed{suffix}")
    configs = [c for c in configurations(args.quick, args.zoo) if args.only is None or args.only in c["name"]]
    if not configs:
        parser.error(f"no configuration name contains {args.only!r}")
    info = machine_info(sys.argv)
    settings = {
        "repeats": repeats,
        "warmup": warmup,
        "quick": args.quick,
        "only": args.only,
        "worker_timeout_s": WORKER_TIMEOUT_S,
    }
    done: list[dict[str, Any]] = []
    for cfg in configs:
        cfg = {**cfg, "results": {}}
        for method in cfg["methods"]:
            print(f"{cfg['name']:<34} {method:<14}", end=" ", flush=True)
            spec = {
                "model": cfg["model"],
                "px": cfg["px"],
                "n": cfg["n"],
                "method": method,
                "warmup": warmup,
                "repeats": repeats,
                "device": args.device,
            }
            res = launch(spec)
            cfg["results"][method] = res
            print(f"ERROR {res['error']}" if "error" in res else f"{res['median_s']:.3f} s, {res['peak_mb']:.0f} MB")
        done.append(cfg)
        write_reports(prefix, info, done, settings)
    print_table(done)
    print(f"wrote {prefix}.json and {prefix}.md")


if __name__ == "__main__":
    main()
