"""Teachers for knowledge distillation: build an architecture, then load its trained weights from a LOCAL file.

A teacher is a trained network whose predictions guide a student (see
:class:`gradsign_pl.modules.distillation.DistillationModule`). gradsign_pl never downloads weights, so a teacher is
always an architecture spec (anything :func:`gradsign_pl.candidates.candidate` accepts, built with random
initialisation) plus a checkpoint file on disk. :func:`load_teacher` reads

- a plain ``state_dict`` (``torch.save(model.state_dict(), "teacher.pt")``; ``.pt``, ``.pth``, ``.bin``, any name),
- a dict holding the weights under ``"state_dict"`` or ``"model"`` (ZenNAS / timm training scripts),
- a Lightning checkpoint of a :class:`~gradsign_pl.modules.ClassificationModule` (keys ``backbone.*``; other
  keys, e.g. a distillation module's ``feature_projections.*``, are ignored),
- a ``.safetensors`` file (when the ``safetensors`` package is installed),

stripping a common ``module.`` (DDP), ``backbone.`` (Lightning) or ``model.`` prefix when that makes the keys match
the architecture. :func:`save_teacher` writes the plain ``state_dict`` form.

Files are read without running code from them. A ``torch.save`` file is unpickled with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers (dict, list, tuple, str,
numbers). A checkpoint that also pickles other objects beside its weights (a timm training checkpoint's
``argparse.Namespace`` ``args``, a Lightning checkpoint whose hyperparameters hold a ``Path``, or anything else) is
read a second time, still with the safe unpickler, with every such object replaced by an inert placeholder that is
never imported nor called; its tensors (e.g. the ``"state_dict"`` entry) are kept, the rest is dropped (this
second reading needs the zip format ``torch.save`` writes by default since torch 1.6). Only a file
whose weights live inside such objects (e.g. ``torch.save(model)``, a pickled ``nn.Module``) needs the full
unpickler, which can run arbitrary code: it is refused unless ``load_teacher(..., trust_checkpoint=True)`` (in a
recipe ``distill.trust_checkpoint: true``), and used then with a :class:`UserWarning`.

Example::

    teacher = load_teacher("timm:efficientnet_b3", "checkpoints/effnet_b3_cifar10.pt", num_classes=10)
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.candidates import candidate

__all__ = ["ResizedInput", "load_teacher", "resize_square", "save_teacher"]

STRIP_PREFIXES = ("module.", "backbone.", "model.")
"""Key prefixes that :func:`load_teacher` may strip (up to two, in any order) to match the architecture's keys."""

_HOW_TO_TRAIN = (
    "train one (e.g. fit a ClassificationModule around candidate({model!r}).build(num_classes=...) on your data and "
    "pass its Lightning checkpoint, or save its backbone with "
    "gradsign_pl.modules.teacher.save_teacher(module.backbone, path)) or point checkpoint to a local file"
)


def resize_square(x: Tensor, side: int | None) -> Tensor:
    """The image batch ``x`` (``N, C, H, W``) resized to ``side`` x ``side`` pixels (bilinear, ``align_corners=False``);
    ``x`` itself when ``side`` is ``None`` or already its size. How a teacher sees a batch at its own resolution."""
    if side is None or tuple(x.shape[-2:]) == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


class ResizedInput(nn.Module):
    """``model`` seeing every input through :func:`resize_square` at ``side`` pixels: a teacher trained at its
    ``teacher_resolution`` on smaller images (e.g. EfficientNet-B3 at 64 px on 32 px CIFAR-10), so the data pipeline
    and its augmentation stay those of every other run. Save ``wrapper.model`` (the weights carry no prefix); a
    :class:`~gradsign_pl.modules.DistillationModule` with the same ``teacher_resolution`` then feeds it the same
    resized batch."""

    def __init__(self, model: nn.Module, side: int) -> None:
        super().__init__()
        if not isinstance(side, int) or side < 1:
            raise ValueError(f"side must be a positive int (pixels), got {side!r}")
        self.model, self.side = model, side

    def forward(self, x: Tensor) -> Tensor:
        return self.model(resize_square(x, self.side))


def save_teacher(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` (tensors moved to CPU) to ``path`` with ``torch.save``; returns the path.

    Parent folders are created. The file is the plain ``state_dict`` form that :func:`load_teacher` reads back
    into the same architecture. It is written to a temporary name and renamed into place, so an interruption never
    leaves a truncated checkpoint at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of the ``.safetensors`` file ``path`` (a format that holds nothing but tensors), on the CPU."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(
            f"teacher checkpoint {path} is a .safetensors file but the safetensors package is not installed; "
            "install it (pip install safetensors) or save the weights with torch.save(model.state_dict(), ...)"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"cannot read teacher checkpoint {path} as safetensors: {type(exc).__name__}: {exc}") from exc


class _Inert:
    """Stands in for an object the safe unpickler does not allow: accepts any construction arguments and state,
    keeps none of them, runs nothing. Subclassed once per refused global (``_global`` names it)."""

    _global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self._global}>"


def _refused_globals(path: Path) -> list[str] | None:
    """The globals (``module.name``) of the ``torch.save`` zip file ``path`` that ``weights_only`` does not allow,
    found by reading the pickle's opcodes (nothing is imported); ``None`` for files that are not torch.save zips."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return None


def _weights_around_objects(path: Path, refused: list[str] | None) -> dict[str, Tensor] | None:
    """The weights of ``path`` read by the safe unpickler with each global of ``refused`` replaced by an inert
    :class:`_Inert` placeholder; ``None`` when that is not possible (no list, a module the safe unpickler blocks
    outright, other refusals) or when the weights are not outside those objects (e.g. a pickled ``nn.Module``)."""
    if not refused:
        return None
    stand_ins: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (type(f"_Inert[{name}]", (_Inert,), {"_global": name}), name) for name in refused
    ]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        return _extract_state_dict(obj, path)
    except Exception:
        return None


def _refusal_reason(exc: BaseException) -> str:
    """The line of a ``torch.load(weights_only=True)`` error that says what it refused, without torch's advice."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "GLOBAL" in line or "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[-1].strip()
            if not line and i + 1 < len(lines):  # some torch versions put the reason on the next line
                line = lines[i + 1]
            return line.split(". Please use", 1)[0].rstrip(".")
    return lines[-1] if lines else type(exc).__name__


def _refused(path: Path, exc: BaseException, refused: list[str] | None) -> ValueError:
    others = [g for g in refused or [] if g not in str(exc)]
    also = f"; it also pickles {_list(others)}" if others else ""
    return ValueError(
        f"teacher checkpoint {path} was not loaded: the safe unpickler (torch.load(weights_only=True)) refused it: "
        f"{_refusal_reason(exc)}{also}; no weights could be read without unpickling those objects, and that can run "
        "arbitrary code stored in the file. Re-save the weights as tensors only, with "
        "torch.save(model.state_dict(), path) (or gradsign_pl.modules.teacher.save_teacher(model, path)) or "
        "safetensors.torch.save_file(model.state_dict(), path); or, only if you trust the file, pass "
        "load_teacher(..., trust_checkpoint=True) (in a recipe: distill.trust_checkpoint: true)"
    )


def _read_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The ``{name: tensor}`` weights in ``path`` (on the CPU), read as the module docstring describes.

    Order: safetensors for ``.safetensors`` files; else ``torch.load(weights_only=True)``; when that refuses some
    pickled object, the same safe load with inert placeholders for the refused objects; only then, and only with
    ``trust_checkpoint=True``, the full unpickler (with a :class:`UserWarning` naming the file).
    """
    if path.suffix == ".safetensors":
        return _extract_state_dict(_read_safetensors(path), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refusal = exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    else:
        return _extract_state_dict(obj, path)

    refused = _refused_globals(path)
    state = _weights_around_objects(path, refused)
    if state is not None:
        return state
    if not trust_checkpoint:
        raise _refused(path, refusal, refused) from None
    warnings.warn(
        f"loading teacher checkpoint {path} with the full unpickler (trust_checkpoint=True): the safe loader refused "
        f"it ({_refusal_reason(refusal)}), and unpickling can run arbitrary code stored in the file; do this only "
        "for files you trust, and re-save the weights with torch.save(model.state_dict(), path) to drop the need",
        UserWarning,
        stacklevel=3,
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    return _extract_state_dict(obj, path)


def _unreadable(path: Path, exc: Exception) -> ValueError:
    return ValueError(
        f"cannot read teacher checkpoint {path}: {type(exc).__name__}: {exc}. Expected a file written by "
        "torch.save(model.state_dict(), path) (or save_teacher), a Lightning checkpoint, or a .safetensors file"
    )


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The ``{name: tensor}`` mapping inside a loaded checkpoint object."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise ValueError(
        f"teacher checkpoint {path} holds no weights ({type(obj).__name__}"
        f"{' with keys ' + ', '.join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else ''}); expected a "
        "state_dict, a dict with a 'state_dict' or 'model' entry, or a Lightning checkpoint"
    )


def _strip_candidates(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """``state`` itself, then the sub-dicts under each prefix of :data:`STRIP_PREFIXES` (two levels deep)."""
    out = [state]
    frontier = [state]
    for _ in range(2):
        nxt = []
        for sd in frontier:
            for prefix in STRIP_PREFIXES:
                sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
                if sub:
                    nxt.append(sub)
        out += nxt
        frontier = nxt
    return out


def _best_match(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """The key set (see :func:`_strip_candidates`) sharing most keys with ``expected``; ties: fewest extras."""
    return max(_strip_candidates(state), key=lambda sd: (len(expected & sd.keys()), -len(sd.keys() - expected)))


def _list(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(map(repr, keys[:n]))
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def load_teacher(
    model: Any = "timm:efficientnet_b3",
    checkpoint: str | Path | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    input_size: tuple[int, int] | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """Build ``model`` for ``num_classes`` / ``in_chans`` and load its weights from the local file ``checkpoint``.

    Args:
        model: the architecture, any spec :func:`gradsign_pl.candidates.candidate` accepts (e.g.
            ``"timm:efficientnet_b3"``); built with random initialisation, never with downloaded weights.
        checkpoint: path of the weights (see the module docstring for the accepted formats).
        num_classes: classifier outputs the checkpoint was trained with.
        in_chans: input channels the checkpoint was trained with.
        input_size: ``(height, width)`` for architectures that fix it at construction (e.g. a ViT teacher); see
            :meth:`gradsign_pl.candidates.Candidate.build`.
        trust_checkpoint: allow the full unpickler (``torch.load(weights_only=False)``) for a file whose weights the
            safe reading cannot reach (e.g. a pickled ``nn.Module``). Unpickling runs code stored in the file, so
            set this only for files you trust; a :class:`UserWarning` naming the file is issued when it is used.
            Files the safe reading handles are never fully unpickled, whatever this says.

    Returns:
        The teacher in eval mode, every parameter with ``requires_grad=False``, on the CPU.

    Raises:
        FileNotFoundError: ``checkpoint`` is ``None`` or does not exist (the teacher is never downloaded).
        ValueError: the file cannot be read, needs the full unpickler while ``trust_checkpoint`` is False (the
            message names what the safe unpickler refused and how to re-save the file), holds no weights, its keys
            do not match the architecture (up to 5 missing and 5 unexpected keys are listed, with the counts), or a
            tensor's shape differs (the message names the parameter, both shapes and the ``num_classes`` /
            ``in_chans`` that would fit).
    """
    spec = candidate(model)
    how = _HOW_TO_TRAIN.format(model=spec.name)
    if checkpoint is None:
        raise FileNotFoundError(f"no teacher checkpoint given for {spec.name}; the teacher is never downloaded: {how}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"teacher checkpoint {path} {what}; the teacher is never downloaded: {how}")

    state = _read_state_dict(path, trust_checkpoint)
    net = spec.build(num_classes=num_classes, in_chans=in_chans, input_size=input_size)
    own = net.state_dict()
    state = _best_match(state, set(own))

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"teacher checkpoint {path} does not fit {spec.name}: {len(missing)} of its {len(own)} tensors are missing "
            f"({_list(missing) or 'none'}) and {len(unexpected)} keys are unexpected ({_list(unexpected) or 'none'}). "
            f"Check that model={spec.name!r} is the architecture the checkpoint was trained with"
        )
    for key, tensor in state.items():
        want = own[key]
        if tensor.shape != want.shape:
            hint = ""
            if tensor.dim() >= 1 and tensor.shape[1:] == want.shape[1:] and want.shape[0] == num_classes:
                hint = f"; the checkpoint was trained for {tensor.shape[0]} classes: pass num_classes={tensor.shape[0]}"
            elif (
                tensor.dim() == 4 and want.dim() == 4 and want.shape[1] == in_chans and tensor.shape[0] == want.shape[0]
            ):
                hint = f"; the checkpoint takes {tensor.shape[1]}-channel images: pass in_chans={tensor.shape[1]}"
            raise ValueError(
                f"teacher checkpoint {path} does not fit {spec.name} (num_classes={num_classes}, in_chans={in_chans}): "
                f"parameter {key!r} has shape {tuple(tensor.shape)} in the checkpoint but {tuple(want.shape)} in the "
                f"model{hint or '; check model, num_classes and in_chans'}"
            )
    net.load_state_dict(state, strict=True)
    net.eval()
    net.requires_grad_(False)
    return net
