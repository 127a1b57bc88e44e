"""Image classification around any backbone: cross-entropy, SGD or AdamW with cosine decay, torchmetrics accuracy."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning.fabric.utilities.data import AttributeDict


def check_optimiser_options(lr: float, weight_decay: float, label_smoothing: float) -> None:
    """``ValueError`` naming the value unless ``lr > 0``, ``weight_decay >= 0`` (finite) and ``label_smoothing`` is
    in [0, 1): the checks both training modules make when built, so a recipe's typo fails before any work."""
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0 (the peak learning rate), got {lr!r}")
    if isinstance(weight_decay, bool) or not (
        isinstance(weight_decay, (int, float)) and weight_decay >= 0 and math.isfinite(weight_decay)
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing < 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")


class ClassificationModule(pl.LightningModule):
    """Train ``backbone`` (an ``nn.Module`` returning logits) for ``num_classes``-way classification.

    Args:
        backbone: the network; ``forward(x)`` returns ``(n, num_classes)`` logits. ``None`` makes a template that
            only carries the training hyperparameters (``gradsign-fit`` builds one module per surviving candidate).
        num_classes: number of classes (for the accuracy metrics).
        lr: peak learning rate; weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        label_smoothing: cross-entropy label smoothing.
        warmup_fraction: fraction of the schedule spent warming the learning rate up to ``lr`` (torch's ``OneCycleLR``:
            cosine warm-up, then cosine decay to ``lr / 1e4`` at the last step of the fit). The schedule always spans
            the whole fit (``trainer.estimated_stepping_batches``), so a fit stopped early and resumed from its
            checkpoint follows the same learning rates as one that never stopped.

    Logs ``train/loss``, ``train/acc`` per epoch and ``val/loss``, ``val/acc`` (top-1, fraction in [0, 1]),
    and ``test/acc`` when tested.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        num_classes: int = 10,
        *,
        lr: float = 2e-3,
        weight_decay: float = 5e-4,
        optimizer: str = "adamw",
        label_smoothing: float = 0.0,
        warmup_fraction: float = 0.15,
    ) -> None:
        super().__init__()
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        if not 0.0 < warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction is a fraction of the schedule in (0, 1), got {warmup_fraction!r}")
        check_optimiser_options(lr, weight_decay, label_smoothing)
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        metric: dict[str, Any] = {"task": "multiclass", "num_classes": num_classes}
        self.train_acc = torchmetrics.Accuracy(**metric)
        self.val_acc = torchmetrics.Accuracy(**metric)
        self.test_acc = torchmetrics.Accuracy(**metric)

    if TYPE_CHECKING:
        # Lightning types hparams as AttributeDict | MutableMapping; saved from init arguments it is an AttributeDict
        @property
        def hparams(self) -> AttributeDict: ...

    def forward(self, x: Tensor) -> Tensor:
        if self.backbone is None:
            raise RuntimeError("this ClassificationModule is a template without a backbone; pass backbone=<nn.Module>")
        return self.backbone(x)

    def training_hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments (other than backbone and num_classes) to build a module like this one."""
        return {k: v for k, v in self.hparams.items() if k not in ("backbone", "num_classes") and not k.startswith("_")}

    def _step(self, batch: Any, stage: str, metric: torchmetrics.Metric) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0)
        metric(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt: torch.optim.Optimizer
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                self.parameters(), lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay
            )
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else 1
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=hp.lr, total_steps=max(int(total), 1), pct_start=hp.warmup_fraction
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
