"""What ``mnistkit inspect`` prints: a model's architecture, its named parameters and its training record.

The same information the tutorial shows with ``print(net)`` and ``net.named_parameters()``, laid out to
read at a glance, plus what the checkpoint's metadata says about how the model was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from . import checkpoint, fileio
from .models import create_model


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, count) for every named parameter, in registration order."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


def format_parameters(model: nn.Module) -> str:
    rows = parameter_table(model)
    total = sum(count for _, _, count in rows)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cells = [(name, "×".join(map(str, shape)) or "scalar", f"{count:,}") for name, shape, count in rows]
    name_w = max([len("parameter"), *(len(c[0]) for c in cells)])
    shape_w = max([len("shape"), *(len(c[1]) for c in cells)])
    count_w = max([len("count"), len(f"{total:,}"), *(len(c[2]) for c in cells)])
    lines = [f"{'parameter':<{name_w}}  {'shape':<{shape_w}}  {'count':>{count_w}}"]
    lines += [f"{name:<{name_w}}  {shape:<{shape_w}}  {count:>{count_w}}" for name, shape, count in cells]
    lines.append(f"{'total':<{name_w}}  {'':<{shape_w}}  {total:>{count_w},}")
    if trainable != total:
        lines.append(f"{'trainable':<{name_w}}  {'':<{shape_w}}  {trainable:>{count_w},}")
    buffers = sum(b.numel() for b in model.buffers())
    if buffers:
        lines.append(f"(plus {buffers:,} buffer values that are not trained, e.g. BatchNorm running statistics)")
    return "\n".join(lines)


def format_training(meta: dict[str, Any]) -> str:
    """The metadata a checkpoint records about its training, one fact per line (absent facts are left out)."""
    metrics = meta.get("metrics") or {}
    facts: list[tuple[str, Any]] = [("command", meta.get("command"))]
    if dataset := meta.get("dataset"):
        facts.append(
            (
                "dataset",
                f"{dataset.get('name')} ({dataset.get('source')}): {dataset.get('train', 0):,} train, "
                f"{dataset.get('val', 0):,} validation, {dataset.get('test', 0):,} test images",
            )
        )
    if classes := meta.get("classes"):
        facts.append(("classes", " ".join(classes)))
    if norm := meta.get("normalization"):
        facts.append(("normalization", f"(pixel / {norm['divisor']} - {norm['mean']}) / {norm['std']}"))
    facts.append(("epochs", metrics.get("epochs")))
    if metrics.get("train_loss") is not None:
        facts.append(("train loss", f"{metrics['train_loss']:.4f}"))
    if metrics.get("val_loss") is not None:
        facts.append(("val loss / accuracy", f"{metrics['val_loss']:.4f} / {metrics['val_accuracy']:.2%}"))
    if metrics.get("test_loss") is not None:
        tta = " (with test-time augmentation)" if meta.get("tta") else ""
        facts.append(("test loss / accuracy", f"{metrics['test_loss']:.4f} / {metrics['test_accuracy']:.2%}{tta}"))
    if metrics.get("train_seconds") is not None:
        facts.append(("training time", f"{metrics['train_seconds']:.1f} s"))
    if config := meta.get("config"):
        facts.append(("config", ", ".join(f"{k}={v}" for k, v in config.items() if v is not None)))
    facts.append(("created", meta.get("created")))
    if "mnistkit_version" in meta:
        facts.append(
            (
                "versions",
                f"mnistkit {meta['mnistkit_version']}, torch {meta.get('torch_version')}, "
                f"python {meta.get('python_version')}",
            )
        )
    facts.append(("weights sha256", meta.get("sha256")))
    shown = [(key, value) for key, value in facts if value is not None]
    width = max((len(key) for key, _ in shown), default=0)
    # One line each, whatever a model.json written elsewhere holds (a newline in its command would forge a fact).
    return "\n".join(f"{key:<{width}}  {fileio.one_line(str(value))}" for key, value in shown)


def format_summary(model: nn.Module, title: str, meta: dict[str, Any] | None = None) -> str:
    """Title, ``print(model)``, the parameter table and, for a checkpoint, its training record."""
    sections = [title, "", "architecture", str(model), "", "parameters", format_parameters(model)]
    if meta is not None:
        sections += ["", "training", format_training(meta)]
    return "\n".join(sections)


def inspect_checkpoint(path: str | Path | None = None) -> str:
    """The summary of a run folder or checkpoint file; None is the bundled pretrained model."""
    from .inference import PRETRAINED_DIR  # the pretrained model's location is inference's business

    model, meta = checkpoint.load_checkpoint(PRETRAINED_DIR if path is None else path)
    where = "the bundled pretrained model" if path is None else str(path)
    return format_summary(model, f"{meta['model']} {meta.get('model_options', {})} from {where}", meta)


def inspect_model(name: str, **options: Any) -> str:
    """The summary of a freshly built registry model (untrained): architecture and parameters only."""
    model = create_model(name, **options)
    return format_summary(model, f"{name} {options} (registry model, untrained)")
