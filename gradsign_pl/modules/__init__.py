"""LightningModules used by the recipes, and the teacher loader of distillation."""

from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.modules.distillation import DistillationModule
from gradsign_pl.modules.teacher import load_teacher, save_teacher

__all__ = ["ClassificationModule", "DistillationModule", "load_teacher", "save_teacher"]
