"""Zen-score (Lin et al., "Zen-NAS", ICCV 2021).

With gaussian inputs x, eps ~ N(0, 1) of the batch's shape (n, *inputs.shape[1:]) and f the feature map before
the final global pooling::

    Delta = mean_i sum_{c,h,w} | f(x)_i - f(x + gamma * eps)_i |          # gamma = mixup_gamma = 1e-2
    score = log(Delta) + sum_{BN layers l} log sqrt(mean_c running_var_lc)   # after the forwards of x and x + gamma*eps

averaged over ``repeat`` draws (fresh gaussian weights and inputs each time). Higher = better predicted accuracy.

Semantics, checked against ``ZeroShotProxy/compute_zen_score.py`` in idstcv/ZenNAS:
  * weights: with ``gaussian_init=True`` (the authors' default, done before every repeat) Conv/Linear weights are
    redrawn from N(0, 1) with zero biases and BatchNorm/GroupNorm affine set to 1/0 -- on the private copy only;
    ``gaussian_init=False`` scores the model's current weights.
  * BatchNorm: the copy is in train mode (batch statistics), and the BN term reads each layer's ``running_var``
    after the forwards of x and x + gamma*eps, as the authors' code does (with the layers' own momentum, 0.1 by
    default, the running variance mixes the batch variances into its initial value). The paper writes the batch
    variance itself; that is ``-inf`` for a layer whose input is constant (a branch cut off by ``none`` edges,
    about 17% of NB-201 archs), where the code's running variance stays finite, so we follow the code. Every
    ``_BatchNorm`` that runs before the feature map counts once (the authors' ``forward_pre_GAP`` never runs the
    head); a layer without running statistics (``track_running_stats=False``) contributes its batch variance from
    the forward of x. Across ``repeat`` draws the running statistics keep accumulating, as in the authors' loop.
  * feature map (the authors call ``forward_pre_GAP``): ``features(model, x)`` if given; else
    ``model.forward_features(x)`` (timm); else the input of the last global pooling module executed
    (``nn.AdaptiveAvgPool*d``/``nn.AdaptiveMaxPool*d``); else the input of the last ``nn.Linear`` executed.
    ``options["features"]`` records which one was used.
  * the gaussian draws come from the scoring context's RNG (seeded 0, the caller's RNG is restored).
Dropout is off; no gradients are taken. Only the batch's shape is used, never its values or targets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from gradsign_pl.proxies._common import ScoringContext, finite_or_reason
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies.jacov import output_tensor, train_mode_copy

POOL_TYPES = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
FeatureFn = Callable[[nn.Module, Tensor], Tensor]


@torch.no_grad()
def gaussian_init_(net: nn.Module) -> None:
    """ZenNAS's re-initialisation: Conv/Linear weights ~ N(0, 1), zero biases, BN/GroupNorm affine 1/0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _FeatureProbe:
    """One forward: the feature map and the log batch-sigma of BatchNorm layers without running statistics."""

    def __init__(self, net: nn.Module, features: FeatureFn | None) -> None:
        self.net = net
        self.custom = features
        self.bns = [(name, m) for name, m in net.named_modules() if isinstance(m, _BatchNorm)]
        self.targets: list[tuple[str, nn.Module]]  # the modules whose input is the feature map (hooked)
        if features is not None:
            self.kind, self.targets = "custom", []
        elif callable(getattr(net, "forward_features", None)):
            self.kind, self.targets = "forward_features", []
        else:
            pools: list[tuple[str, nn.Module]] = [(n, m) for n, m in net.named_modules() if isinstance(m, POOL_TYPES)]
            linears: list[tuple[str, nn.Module]] = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
            if pools:
                self.kind, self.targets = "pool_input", pools
            elif linears:
                self.kind, self.targets = "linear_input", linears
            else:
                raise ValueError(
                    f"zen cannot find the feature map of {type(net).__name__}: it has no forward_features, no "
                    "adaptive pooling and no nn.Linear; pass features=lambda model, x: <pre-pooling feature map>"
                )
        self.used: str = self.kind

    def __call__(self, x: Tensor, *, record_bn: bool) -> tuple[Tensor, list[Any]]:
        """The feature map, and for each BN layer that ran before it: the module (has running statistics) or the
        log of its batch sigma (has none)."""
        events: list[tuple[str, Any]] = []  # in execution order: ("bn", module | log sigma) / ("feat", tensor)

        def bn_hook(m: nn.Module, args: tuple[Any, ...]) -> None:
            if m.running_var is not None:
                events.append(("bn", m))  # its running_var is read after both forwards
                return
            h = args[0].detach()
            dims = [d for d in range(h.ndim) if d != 1]
            var = h.double().var(dim=dims, unbiased=True)
            events.append(("bn", 0.5 * float(torch.log(var.mean()))))  # -inf for a constant input: reported

        def feat_hook(name: str):
            def hook(m: nn.Module, args: tuple[Any, ...]) -> None:
                events.append(("feat", (name, args[0].detach())))

            return hook

        handles = [m.register_forward_pre_hook(bn_hook) for _, m in self.bns] if record_bn else []
        handles += [m.register_forward_pre_hook(feat_hook(n)) for n, m in self.targets]
        try:
            if self.kind == "custom":
                assert self.custom is not None  # kind "custom" is set only with a features function
                feat = self.custom(self.net, x)
            elif self.kind == "forward_features":
                # torch types Module.__getattr__ as Tensor | Module; __init__ checked forward_features is callable
                feat = self.net.forward_features(x)  # type: ignore[operator]
            else:
                output_tensor(self.net(x), "zen")
                feat = None
        finally:
            for h in handles:
                h.remove()
        if feat is None:
            seen = [i for i, (kind, _) in enumerate(events) if kind == "feat"]
            if not seen:
                names = ", ".join(n for n, _ in self.targets)
                raise ValueError(
                    f"zen: none of the candidate feature layers of {type(self.net).__name__} ({names}) ran in the "
                    "forward; pass features=lambda model, x: <pre-pooling feature map>"
                )
            last = seen[-1]
            name, feat = events[last][1]
            self.used = f"{self.kind}:{name}"
            events = events[:last]
        feat = output_tensor(feat, "zen (feature map)")
        return feat, [v for kind, v in events if kind == "bn"]


@register_proxy("zen")
def zen(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    mixup_gamma: float = 1e-2,
    repeat: int = 1,
    gaussian_init: bool = True,
    features: FeatureFn | None = None,
    loss_fn: Any = None,
) -> ProxyResult:
    """Zen-score: log of the feature map's response to a small input perturbation plus the BN scaling terms.

    Args:
        model: any ``nn.Module``; it is not modified.
        inputs: mini-batch (n >= 2) -- only its shape is used: the gaussian inputs have shape ``inputs.shape``
            (batch size and resolution of the batch).
        targets: n targets, only validated (Zen is data- and label-free).
        mixup_gamma: size of the perturbation (1e-2 as in ZenNAS).
        repeat: number of draws averaged (ZenNAS's search uses 32; each is one pair of forwards).
        gaussian_init: redraw the copy's weights from N(0, 1) before every repeat, as ZenNAS does.
        features: ``features(model, x) -> feature map``; default: see the module docstring.
        loss_fn: accepted and ignored (Zen uses no loss), so all proxies can be called alike.

    Returns:
        :class:`ProxyResult`; higher = better predicted accuracy; ``options["features"]`` names the feature map
        used; ``nan`` with ``reason`` when Delta is 0 or not finite.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be a positive number of draws, got {repeat}")
    with ScoringContext(model, inputs, targets) as ctx:
        net = train_mode_copy(ctx)
        probe = _FeatureProbe(net, features)
        scores, reason = [], None
        with torch.no_grad():
            for _ in range(repeat):
                if gaussian_init:
                    gaussian_init_(net)
                x = torch.randn(ctx.inputs.shape, dtype=ctx.dtype, device=ctx.device)
                eps = torch.randn(ctx.inputs.shape, dtype=ctx.dtype, device=ctx.device)
                f1, bn_terms = probe(x, record_bn=True)
                f2, _ = probe(x + mixup_gamma * eps, record_bn=False)
                log_sigmas, seen = [], set()
                for t in bn_terms:  # a layer called twice counts once, like ZenNAS's loop over modules
                    if isinstance(t, float):
                        log_sigmas.append(t)
                    elif id(t) not in seen:
                        seen.add(id(t))
                        log_sigmas.append(0.5 * float(torch.log(t.running_var.double().mean())))
                delta = (f1.double() - f2.double()).abs().reshape(f1.shape[0], -1).sum(1).mean()
                value, reason = finite_or_reason(torch.log(delta) + sum(log_sigmas), "log(Delta) + BN scaling")
                if reason:
                    break
                scores.append(value)
    score = sum(scores) / len(scores) if not reason else float("nan")
    return ctx.result(
        "zen",
        score,
        n_params=sum(p.numel() for p in model.parameters()),
        options={
            "mixup_gamma": mixup_gamma,
            "repeat": repeat,
            "gaussian_init": gaussian_init,
            "features": probe.used,
            "batch_size": ctx.n,
            "input_shape": list(ctx.inputs.shape[1:]),
            "batchnorm": "train; BN term from running_var after both forwards (ZenNAS code)",
        },
        reason=reason,
    )
