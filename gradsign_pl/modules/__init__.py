"""LightningModules used by the recipes."""

from gradsign_pl.modules.classification import ClassificationModule

__all__ = ["ClassificationModule"]
