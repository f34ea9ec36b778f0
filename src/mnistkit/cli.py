"""The ``mnistkit`` command line: a thin layer that parses options and calls library functions.

Every user mistake surfaces as a ``MnistkitError``; ``main`` prints it as one line on stderr and exits
non-zero, never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from . import __version__
from .augment import AUGMENTATIONS
from .config import DEVICES, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from .errors import MnistkitError

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# train


def add_train(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model and save a run folder",
        description="Train a model. With no options: the cnn on the bundled MNIST to about 99.2%% test accuracy "
        "in under a minute on a laptop CPU. Options override the --preset, which overrides the defaults.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=None, help=f"named dataset: mnist (bundled), fashion-mnist, kmnist (downloaded once) [default: {defaults.dataset}]")
    src.add_argument("--data", metavar="PATH", default=None, help="a folder of IDX files (raw or .gz), the tutorial's mnist.pkl.gz, or a Keras-style .npz")
    g.add_argument("--val-size", type=int, default=None, help=f"hold out the last N training images for validation; 0 = none [default: {defaults.val_size}]")
    g.add_argument("--no-normalize", dest="normalize", action="store_const", const=False, default=None, help="feed pixels / 256 as the tutorial does instead of standardizing")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help=f"registered model: logreg, mlp, cnn [default: {defaults.model}]")
    g.add_argument("--width", type=int, default=None, help="channel width of the cnn [default: 16]")
    g = p.add_argument_group("optimisation")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named set of options; 'tutorial' reproduces the tutorial exactly")
    g.add_argument("--epochs", type=int, default=None, help=f"[default: {defaults.epochs}]")
    g.add_argument("--batch-size", type=int, default=None, help=f"[default: {defaults.batch_size}]")
    g.add_argument("--lr", type=float, default=None, help=f"learning rate (the peak for onecycle) [default: {defaults.lr}]")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"[default: {defaults.optimizer}]")
    g.add_argument("--momentum", type=float, default=None, help=f"SGD momentum [default: {defaults.momentum}]")
    g.add_argument("--nesterov", action="store_const", const=True, default=None, help="Nesterov momentum for SGD")
    g.add_argument("--weight-decay", type=float, default=None, help=f"[default: {defaults.weight_decay}]")
    g.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"learning-rate schedule [default: {defaults.schedule}]")
    g.add_argument("--step-size", type=int, default=None, help=f"epochs between decays for --schedule step [default: {defaults.step_size}]")
    g.add_argument("--gamma", type=float, default=None, help=f"decay factor for --schedule step [default: {defaults.gamma}]")
    g.add_argument("--label-smoothing", type=float, default=None, help=f"[default: {defaults.label_smoothing}]")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value [default: off]")
    g.add_argument("--augment", choices=AUGMENTATIONS, default=None, help=f"augment training batches on the device [default: {defaults.augment}]")
    g.add_argument("--tta", action="store_const", const=True, default=None, help="test-time augmentation: average over 1-px shifts when testing")
    g.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the model (pays off on GPU)")
    g.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE", help="stop after PATIENCE epochs without a lower validation loss; restore the best weights [default: off]")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=None, help=f"[default: {defaults.seed}]")
    g.add_argument("--deterministic", action="store_const", const=True, default=None, help="bitwise-repeatable runs (deterministic kernels)")
    g.add_argument("--device", choices=DEVICES, default=None, help=f"[default: {defaults.device}]")
    g.add_argument("--out", metavar="DIR", default=None, help="run folder [default: runs/<time>-<model>]")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar, only the result lines")
    p.set_defaults(handler=cmd_train)


CONFIG_OPTIONS = [
    "dataset", "data", "val_size", "normalize", "model", "width", "epochs", "batch_size", "lr", "optimizer", "momentum",
    "nesterov", "weight_decay", "schedule", "step_size", "gamma", "label_smoothing", "grad_clip", "early_stopping",
    "augment", "tta", "compile", "seed", "deterministic", "device",
]


def cmd_train(args: argparse.Namespace) -> int:
    from . import runs
    from .config import make_config
    from .progress import ConsoleReporter
    from .train import command_line, train_run

    cfg = make_config(args.preset, **{name: getattr(args, name) for name in CONFIG_OPTIONS})
    run_dir = runs.create_run_dir(args.out, cfg.model, args.overwrite)
    print(f"training {cfg.model} on {cfg.data or cfg.dataset} for {cfg.epochs} epochs -> {run_dir}", flush=True)
    result = train_run(cfg, run_dir, ConsoleReporter(quiet=args.quiet), command=command_line())
    if result.test_accuracy is not None:
        print(f"test accuracy {result.test_accuracy:.2%}  test loss {result.test_loss:.4f}")
    print(f"saved {run_dir}  (evaluate: mnistkit evaluate {run_dir})")
    return 0


# --------------------------------------------------------------------------------------------------
# evaluate


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss, accuracy, per-class precision/recall and confusion matrix of a saved model")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run folder, or a checkpoint's .safetensors or .json file")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which split of the data [default: test]")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH", default=None, help="evaluate on this data instead of the run's own")
    src.add_argument("--dataset", default=None, help="evaluate on this named dataset instead of the run's own")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint, format_report

    report = evaluate_checkpoint(args.checkpoint, args.split, args.data, args.dataset)
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    return 0


# --------------------------------------------------------------------------------------------------
# data


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, inspect and download datasets")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the datasets mnistkit knows and whether they are on disk").set_defaults(handler=cmd_data_list)
    info = actions.add_parser("info", help="where a dataset is on disk, its files, sizes and verified checksums")
    info.add_argument("name")
    info.set_defaults(handler=cmd_data_info)
    download = actions.add_parser("download", help="download a dataset into the cache (mirrors, checksums verified)")
    download.add_argument("name")
    download.set_defaults(handler=cmd_data_download)


def cmd_data_list(args: argparse.Namespace) -> int:
    from .download import list_datasets

    for entry in list_datasets():
        print(f"{entry['name']:<14} {entry['status']:<24} {entry['description']}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from .download import describe

    print(json.dumps(describe(args.name), indent=2))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from .download import ensure_dataset

    folder = ensure_dataset(args.name)
    print(f"{args.name}: verified files in {folder}")
    return 0


# --------------------------------------------------------------------------------------------------


COMMANDS = [add_train, add_evaluate, add_data]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistkit",
        description="Train, evaluate and use handwritten-digit classifiers (MNIST and its family) with PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"mnistkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except MnistkitError as exc:
        print(f"mnistkit: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("mnistkit: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
