"""The ``mnistkit`` command line: a thin layer that parses options and calls library functions.

Every user mistake surfaces as a ``MnistkitError``; ``main`` prints it as one line on stderr and exits
non-zero, never with a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import stat
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TextIO

from . import __version__, fileio, torchrun
from .config import (
    AMP_MODES,
    AUGMENTATIONS,
    CNN_OPTIONS,
    DEVICES,
    OPTIMIZERS,
    PRESET_PURPOSES,
    PRESETS,
    SCHEDULES,
    TrainConfig,
)
from .errors import FULL_DISK, ConfigError, MnistkitError, did_you_mean, os_error

Handler = Callable[[argparse.Namespace], int]
# A figure mnistkit drew is drawn again unasked; any other file under its name is replaced only when asked.
OVERWRITE_FIGURE_HELP = "replace a file under the figure's name that is not a figure mnistkit wrote"


def print_text(text: str, *, file: TextIO | None = None, flush: bool = False) -> None:
    """``print`` for every line mnistkit writes: a file name that is not valid UTF-8 (its bytes kept by Python as lone
    surrogates) is shown as ``\\xe9``, as in mnistkit's JSON. Printed as it is, the surrogate comes out as an escaped
    ``\\udce9`` or a raw byte, depending on the stream, or stops the command with UnicodeEncodeError."""
    print(fileio.valid_utf8(text), file=file, flush=flush)


def error_line(message: object) -> str:
    """``mnistkit: error: …`` in one line: a control character in it (a file name's newline) is escaped."""
    return f"mnistkit: error: {fileio.one_line(str(message))}"


def print_error(message: object) -> None:
    """The error's line on stderr."""
    print_text(error_line(message), file=sys.stderr, flush=True)


def report_error(message: str) -> None:
    """A user error, as ``print_error`` prints it; under torchrun one line rather than one per process: the others
    leave theirs for the launcher (``torchrun.record_error``)."""
    if torchrun.prints_errors():
        print_error(message)
    else:
        torchrun.record_error(error_line(message))


def print_json(document: object, *, indent: int | None = None, flush: bool = False) -> None:
    """``document`` as JSON on standard output, every string in it valid Unicode (``fileio.valid_unicode``):
    ``json.dumps`` writes a lone surrogate as ``\\udce9``, which strict JSON parsers refuse."""
    print_text(json.dumps(fileio.valid_unicode(document), indent=indent), flush=flush)


class Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped command or choice (``trian``, ``--optimizer adamm``), and a
    mistake said in one line, as every other error is, with where the usage is: argparse would print the whole
    usage first (twenty lines for train) and leave the line that matters last."""

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            raise argparse.ArgumentError(
                action, f"invalid choice: '{value}';{did_you_mean(value, choices)} choose from {', '.join(choices)}"
            )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # said by the command they were given to, whose --help lists its options
            chosen_parsers(self, parsed)[-1].error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def preset_flags(name: str) -> str:
    """A preset as the command-line options it stands for: ``--model mlp --optimizer sgd ...``."""
    flags = []
    for option, value in PRESETS[name].items():
        flag = "--" + option.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{option.replace('_', '-')}")
        else:
            flags.append(f"{flag} {value}")
    return " ".join(flags)


def format_presets(width: int = 96) -> str:
    """Each preset: what it is for, and the options it sets, indented under its name, in lines of ``width``."""
    indent = " " * 10
    lines = []
    for name in PRESETS:
        lines.append(f"{name:<10}{PRESET_PURPOSES[name]}")
        # A no-break space keeps each flag with its value when wrapping (textwrap breaks at ASCII spaces only).
        flags = preset_flags(name).replace(" ", "\xa0").replace("\xa0--", " --")
        wrapped = textwrap.wrap(flags, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
        lines += [line.replace("\xa0", " ") for line in wrapped]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# train


def add_cnn_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The cnn's architecture options (config.CNN_OPTIONS), for train and for inspect --model cnn."""
    parser.add_argument("--width", type=int, default=None, help="channel width of the cnn, 1 to 1024 [default: 16]")
    parser.add_argument(
        "--stem-width",
        type=int,
        default=None,
        help="channels of the cnn's first, full-resolution block, 1 to 1024; 16 is fastest on CPU [default: --width]",
    )
    parser.add_argument(
        "--stem-stride",
        type=int,
        default=None,
        help="1: the cnn's first block is a 3x3 convolution at full resolution and a max-pool; 2: a 5x5 convolution "
        "with stride 2 instead, no pool, faster on CPU [default: 1]",
    )
    parser.add_argument(
        "--block2-stride",
        type=int,
        default=None,
        help="1: the cnn's second block is a 3x3 convolution and a max-pool; 2: the convolution has stride 2 "
        "instead, no pool, faster [default: 1]",
    )
    parser.add_argument(
        "--crop",
        type=int,
        default=None,
        help="pixels the cnn cuts from each edge of the 28x28 image before its first layer, 0 to 8; MNIST's "
        "digits fit the middle 20x20, so 2 does a quarter less work [default: 0]",
    )


def add_train(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model and save a run folder",
        description=textwrap.fill(
            "Train a model. With no options: the cnn on the bundled MNIST for 3 epochs. "
            "Options override the --preset, which overrides the defaults.",
            100,
        ),
        epilog="presets (--preset NAME sets these options; options given beside it override them):\n"
        + textwrap.indent(format_presets(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        default=None,
        help=f"named dataset: mnist (bundled), fashion-mnist, kmnist (downloaded once) [default: {defaults.dataset}]",
    )
    src.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="a folder of IDX files (raw or .gz; torchvision's root with MNIST/raw, FashionMNIST/raw or KMNIST/raw "
        "too), the tutorial's mnist.pkl.gz, a Keras-style .npz, or the drawing page's feedback.sqlite (corrections)",
    )
    g.add_argument(
        "--mix-mnist",
        type=float,
        default=None,
        metavar="FRACTION",
        help="make FRACTION (0 to <1) of the training images MNIST's, drawn once with --seed from its training part, "
        "so a model fine-tuned on a few images keeps what it knew; data without a test part (corrections) is tested "
        "on MNIST's test set [default: 0]",
    )
    g.add_argument(
        "--val-size",
        type=int,
        default=None,
        help=f"hold out the last N training images for validation; 0 = none [default: {defaults.val_size}]",
    )
    g.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_const",
        const=False,
        default=None,
        help="feed pixels / 256 as the tutorial does instead of standardizing",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="logreg (logistic regression), mlp (the tutorial's network) or cnn (a small convnet) "
        f"[default: {defaults.model}]",
    )
    add_cnn_options(g)
    g.add_argument(
        "--init",
        metavar="pretrained|RUN",
        default=None,
        help="start from these weights instead of a fresh model: the bundled model, or a run folder or checkpoint; "
        "the model options follow it and the input is scaled as its weights expect (see --preset finetune) "
        "[default: fresh weights]",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named set of options: 'tutorial' reproduces the tutorial exactly, 'finetune' teaches the bundled "
        "model your corrections, the others are the speed records of mnistkit bench; what each sets is listed at "
        "the end (and by mnistkit presets)",
    )
    g.add_argument(
        "--epochs", type=int, default=None, help=f"passes over the training images [default: {defaults.epochs}]"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"images per training step (with --nproc, over all processes) [default: {defaults.batch_size}]",
    )
    g.add_argument(
        "--lr", type=float, default=None, help=f"learning rate (the peak for onecycle) [default: {defaults.lr}]"
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help="sgd (uses --momentum, --nesterov), adam or adamw (decoupled weight decay) "
        f"[default: {defaults.optimizer}]",
    )
    g.add_argument(
        "--momentum",
        type=float,
        default=None,
        help=f"SGD momentum; adam and adamw ignore it [default: {defaults.momentum}]",
    )
    g.add_argument("--nesterov", action="store_const", const=True, default=None, help="Nesterov momentum for SGD")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="shrink the weights (not biases or BatchNorm scales) toward 0 each step "
        f"[default: {defaults.weight_decay}]",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help="how the learning rate changes over the run: onecycle (up to --lr, then down), cosine, "
        f"step (see --step-size, --gamma) or none [default: {defaults.schedule}]",
    )
    g.add_argument(
        "--step-size",
        type=int,
        default=None,
        help=f"epochs between decays for --schedule step [default: {defaults.step_size}]",
    )
    g.add_argument(
        "--gamma", type=float, default=None, help=f"decay factor for --schedule step [default: {defaults.gamma}]"
    )
    g.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help="train toward targets that give this share of probability to the other classes "
        f"[default: {defaults.label_smoothing}]",
    )
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value [default: off]")
    g.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default=None,
        help=f"augment training batches on the device [default: {defaults.augment}]",
    )
    g.add_argument(
        "--outliers",
        type=float,
        default=None,
        metavar="SHARE",
        help="add SHARE synthesized non-digits per training image (letters, scribbles, dots, several digits), "
        "trained towards no class, so that predict can say 'not a digit' [default: 0]",
    )
    g.add_argument(
        "--tta",
        action="store_const",
        const=True,
        default=None,
        help="test-time augmentation: average over 1-px shifts when testing",
    )
    g.add_argument(
        "--compile", action="store_const", const=True, default=None, help="torch.compile the model (pays off on GPU)"
    )
    g.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a lower validation loss; restore the best weights [default: off]",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds the initial weights, the shuffling and the augmentation; -2**63 to 2**64 - 1 "
        f"[default: {defaults.seed}]",
    )
    g.add_argument(
        "--deterministic",
        action="store_const",
        const=True,
        default=None,
        help="bitwise-repeatable runs (deterministic kernels)",
    )
    g.add_argument(
        "--device",
        choices=DEVICES,
        default=None,
        help=f"where to train: auto = a CUDA GPU, else Apple's MPS, else the CPU [default: {defaults.device}]",
    )
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=None,
        help="bf16 autocast while training: auto = on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX) "
        "[default: auto]",
    )
    g.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="the run folder to write (config, metrics, checkpoint, curves) [default: runs/<time>-<model>]",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar, only the result lines")
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files into <run>/tensorboard (needs the tensorboard extra)",
    )
    g.add_argument(
        "--mlflow",
        action="store_true",
        help="also track the run in MLflow: params, per-epoch metrics, the run folder as artifacts, into "
        "MLFLOW_TRACKING_URI or MLflow's local default (needs the mlflow extra)",
    )
    g = p.add_argument_group("resume and scale out")
    g.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue the run in folder RUN from its last checkpoint, with its saved options "
        "(Ctrl-C, and SIGTERM in one process, saves one and prints this command)",
    )
    g.add_argument(
        "--checkpoint-every",
        dest="resume_every",
        type=int,
        default=0,
        metavar="N",
        help="also save a resumable checkpoint every N batches, not only at each epoch's end [default: 0]",
    )
    g.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train with N processes on this machine (torchrun; one per GPU on CUDA, Gloo on CPU); "
        "--batch-size stays the global batch",
    )
    p.set_defaults(handler=cmd_train)


CONFIG_OPTIONS = [
    "dataset",
    "data",
    "val_size",
    "normalize",
    "mix_mnist",
    "model",
    *CNN_OPTIONS,
    "init",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "step_size",
    "gamma",
    "label_smoothing",
    "grad_clip",
    "early_stopping",
    "augment",
    "outliers",
    "tta",
    "compile",
    "seed",
    "deterministic",
    "device",
    "amp",
]


def cmd_train(args: argparse.Namespace) -> int:
    from .session import TrainRequest, train

    if args.nproc is not None and not torchrun.launched_by_torchrun():
        from .distributed import launch

        if torchrun.slurm_step_tasks() > 1:
            raise ConfigError(
                f"--nproc starts processes on one machine, but srun started {torchrun.slurm_step_tasks()} tasks "
                "already: drop --nproc (each task trains as one process), or use srun torchrun as "
                "examples/slurm.sbatch does"
            )
        _train_config(args)  # here, before any process starts: in them only process 0 speaks
        return launch(args.nproc, args.argv, out=args.out, resumed=args.resume)  # this command in each process
    torchrun.adopt_slurm_task()  # srun's tasks train as one job, not as N runs into one folder
    config = _train_config(args)
    request = TrainRequest(
        out=args.out,
        overwrite=args.overwrite,
        quiet=args.quiet,
        tensorboard=args.tensorboard,
        mlflow=args.mlflow,
        resume_every=args.resume_every,
        command=" ".join(["mnistkit", *args.argv]),
    )
    if args.resume is not None:
        request.resume, request.device = args.resume, args.device
    request.config = config
    result = train(request, announce=lambda line: print_text(line, flush=True))
    if result.run_dir is not None:
        if result.test_accuracy is not None:
            print_text(f"test accuracy {result.test_accuracy:.2%}  test loss {result.test_loss:.4f}")
        print_text(f"saved {result.run_dir}  (evaluate: mnistkit evaluate {result.run_dir})")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig | None:
    """The options of a new run, checked with its --data before any output; None for --resume, which refuses
    options besides where it runs and how it reports."""
    if args.resume is not None:
        _refuse_options_with_resume(args)
        return None
    from .config import make_config
    from .data import check_source

    config = make_config(args.preset, **{name: getattr(args, name) for name in CONFIG_OPTIONS})
    check_source(config.data, config.dataset)
    return config


def _refuse_options_with_resume(args: argparse.Namespace) -> None:
    """A resumed run keeps its saved options (other values would not continue the same run); only where it
    runs may change (--device, --nproc), how often it saves (--checkpoint-every) and how it reports."""
    given = [
        name for name in [*CONFIG_OPTIONS, "preset", "out"] if name != "device" and getattr(args, name) is not None
    ]
    if args.overwrite:
        given.append("overwrite")
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(
            f"--resume continues the run with the options saved in its config.json; drop {flag} (or start a new run)"
        )


def add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="the named option sets of train --preset: what each is for and what it sets",
        description="The presets of mnistkit train --preset NAME. Options given beside --preset override its values.",
    )
    p.set_defaults(handler=cmd_presets)


def cmd_presets(args: argparse.Namespace) -> int:
    print_text(format_presets())
    return 0


# --------------------------------------------------------------------------------------------------
# evaluate


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="loss, accuracy, per-class precision/recall and confusion matrix of a saved model or an ensemble",
        description="Evaluate a saved model on its own data's test (or validation) split. Several models are "
        "evaluated as an ensemble: the mean of their probabilities, each with its own normalization, test-time "
        "augmentation and temperature, as predict --model RUN1 --model RUN2 answers.",
    )
    p.add_argument(
        "checkpoint",
        nargs="+",
        metavar="RUN_OR_CHECKPOINT",
        help="a run folder, or a checkpoint's .safetensors or .json file; several: their ensemble",
    )
    p.add_argument("--split", choices=["test", "val"], default="test", help="which split of the data [default: test]")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH", default=None, help="evaluate on this data instead of the run's own")
    src.add_argument("--dataset", default=None, help="evaluate on this named dataset instead of the run's own")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    plots = p.add_mutually_exclusive_group()
    plots.add_argument(
        "--plots",
        metavar="DIR",
        default=None,
        help="write confusion.png and mistakes.png into DIR [default: the checkpoint's folder, i.e. the run folder; "
        "for an ensemble, none unless --plots DIR is given]",
    )
    plots.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_FIGURE_HELP)
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import runs
    from .checkpoint import resolve
    from .evaluate import evaluate_checkpoint, evaluate_ensemble, format_report
    from .plots import CONFUSION_NAME, MISTAKES_NAME, check_plots_folder, write_evaluation_plots

    ensemble = len(args.checkpoint) > 1
    # A bad folder, or a file of the user's in it, stops the command before its report is printed.
    if args.plots is not None:
        folder = check_plots_folder(args.plots)
        for name in (CONFUSION_NAME, MISTAKES_NAME):
            fileio.check_replaceable(folder / name, args.overwrite)
    run_dir = None if ensemble else resolve(args.checkpoint[0]).parent
    # An ensemble has no run folder of its own: its plots go only where --plots says, never over a member's.
    plots_folder = None if args.no_plots else args.plots if args.plots is not None else run_dir
    if plots_folder is not None:
        check_plots_folder(plots_folder)  # a run folder on a read-only mount, say
    # Figures drawn into the run folder: held from reading the model to the last figure, so that a train
    # --overwrite meanwhile is refused rather than given the old model's figures.
    with runs.hold(run_dir, None) if run_dir is not None and plots_folder == run_dir else contextlib.nullcontext():
        if ensemble:
            report = evaluate_ensemble(args.checkpoint, args.split, args.data, args.dataset)
        else:
            report = evaluate_checkpoint(args.checkpoint[0], args.split, args.data, args.dataset)
        if args.json:
            print_json(report.to_dict())
        else:
            print_text(format_report(report))
        if plots_folder is not None:
            # titled with the run's name (an ensemble's title names its models) and what the report says it
            # evaluated: model, data, split
            paths = write_evaluation_plots(report, plots_folder, title=None if run_dir is None else run_dir.name)
            if not args.json:
                print_text("plots: " + "  ".join(str(path) for path in paths))
    return 0


# --------------------------------------------------------------------------------------------------
# show


def add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw dataset images as a PNG: a labelled grid, or one image large")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="[default: train]")
    p.add_argument(
        "--n", type=int, default=64, help="images in the grid: the first N of the split, 1 to 400 [default: 64]"
    )
    p.add_argument(
        "--digit",
        type=int,
        default=None,
        metavar="D",
        help="only images of class D, titled by their index in the split",
    )
    p.add_argument(
        "--index",
        type=int,
        default=None,
        metavar="I",
        help="draw image I of the split large instead of a grid: the index that --digit grids and mistakes.png "
        "give each image",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="a folder of IDX files, a .pkl.gz or a .npz instead of a named dataset",
    )
    src.add_argument("--dataset", default="mnist", help="named dataset [default: mnist]")
    p.add_argument(
        "--val-size",
        type=int,
        default=TrainConfig().val_size,
        help="the validation split is the last N training images, as in train [default: %(default)s]",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="the PNG to write [default: samples.png, or sample.png with --index]",
    )
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_FIGURE_HELP)
    p.set_defaults(handler=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from .plots import check_png_name, save, show

    out = check_png_name(args.output or ("sample.png" if args.index is not None else "samples.png"))
    fileio.check_replaceable(out, args.overwrite)
    figure = show(args.split, args.n, args.digit, args.index, args.data, args.dataset, args.val_size)
    print_text(f"wrote {save(figure, out)}")
    return 0


# --------------------------------------------------------------------------------------------------
# compare


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="runs side by side: config differences, best val and test accuracy, time, overlaid curves"
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by mnistkit train")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="compare.png",
        help="the figure of the runs' curves [default: compare.png]",
    )
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_FIGURE_HELP)
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_figure, format_table, read_runs, to_dict
    from .plots import check_png_name, save

    if not args.no_plot:
        fileio.check_replaceable(check_png_name(args.output), args.overwrite)
    summaries = read_runs(args.runs)
    if args.json:
        print_json(to_dict(summaries), indent=2)
    else:
        print_text(format_table(summaries))
    if not args.no_plot:
        path = save(compare_figure(summaries), args.output)
        if not args.json:
            print_text(f"curves: {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# data


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, inspect and download datasets")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the datasets mnistkit knows and whether they are on disk").set_defaults(
        handler=cmd_data_list
    )
    info = actions.add_parser("info", help="where a dataset is on disk, its files, sizes and verified checksums")
    info.add_argument("name", help="a dataset's name, as `mnistkit data list` shows them")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(handler=cmd_data_info)
    download = actions.add_parser("download", help="download a dataset into the cache (mirrors, checksums verified)")
    download.add_argument("name", help="a dataset's name, as `mnistkit data list` shows them")
    download.set_defaults(handler=cmd_data_download)


def cmd_data_list(args: argparse.Namespace) -> int:
    from .download import list_datasets

    for entry in list_datasets():
        print_text(f"{entry['name']:<14} {entry['status']:<24} {entry['description']}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from .download import dataset_info, format_dataset_info

    info = dataset_info(args.name)
    if args.json:
        print_json(info, indent=2)
    else:
        print_text(format_dataset_info(info))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from .download import ensure_dataset

    folder = ensure_dataset(args.name)
    print_text(f"{args.name}: verified files in {folder}")
    return 0


# --------------------------------------------------------------------------------------------------
# feedback


class _WithFeedbackDb(str):
    """A help string whose ``%(feedback_db)s`` becomes the default corrections database, worked out when the help
    is shown rather than when the parser is built (as it is for every command)."""

    def __mod__(self, params: object) -> str:
        try:
            from .feedback import default_path

            where = str(default_path())
        except Exception:  # no home folder, say: the help is still shown
            where = "feedback.sqlite in mnistkit's user data folder"
        return str.__mod__(self, {**params, "feedback_db": where} if isinstance(params, dict) else params)


def add_feedback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "feedback", help="the corrections people gave on the drawing page: stats, list, show, export, delete"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, handler) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        a.add_argument(
            "--db",
            metavar="PATH",
            default=None,
            help=_WithFeedbackDb("the corrections database, as serve's --feedback-db [default: %(feedback_db)s]"),
        )
        a.set_defaults(handler=handler)
        return a

    stats = action("stats", "corrections per digit and how often the model was right", cmd_feedback_stats)
    stats.add_argument("--json", action="store_true", help="print the counts as JSON")
    latest = action("list", "the latest corrections", cmd_feedback_list)
    latest.add_argument("-n", type=int, default=20, help="how many [default: %(default)s]")
    show = action("show", "draw stored corrections as a PNG grid", cmd_feedback_show)
    show.add_argument("ids", nargs="*", type=int, metavar="ID", help="which (default: the latest 64)")
    show.add_argument("-o", "--output", metavar="FILE", default="feedback.png", help="[default: %(default)s]")
    show.add_argument("--overwrite", action="store_true", help=OVERWRITE_FIGURE_HELP)
    export = action("export", "write the corrections as a training set that --data reads", cmd_feedback_export)
    export.add_argument(
        "--format", choices=["idx", "npz"], default=None, help="[default: npz for an output named .npz, else idx]"
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        required=True,
        help="a new folder (idx) or .npz file (.npz is added where the name lacks it)",
    )
    delete = action("delete", "delete corrections by id; exit status 1 if some were not there", cmd_feedback_delete)
    delete.add_argument("ids", nargs="+", type=int, metavar="ID", help="which (their numbers in `feedback list`)")


def _open_feedback(args: argparse.Namespace):
    from .feedback import FeedbackStore, default_path

    return FeedbackStore(args.db if args.db is not None else default_path(), create=False)


def cmd_feedback_stats(args: argparse.Namespace) -> int:
    store = _open_feedback(args)
    stats = store.stats()
    if args.json:
        print_json(stats, indent=2)
        return 0
    # One line each, whatever a database shared by someone else holds as labels.
    print_text(fileio.one_line(f"{stats['corrections']} corrections in {store.path}"))
    for label, entry in stats["per_label"].items():
        print_text(fileio.one_line(f"  {label}: {entry['count']:>5}   the model agreed {entry['model_agreed']}"))
    if stats["model_agreement"] is not None:
        print_text(f"the model's answer matched the given label in {stats['model_agreement']:.1%} of them")
    return 0


def cmd_feedback_list(args: argparse.Namespace) -> int:
    # One line each, whatever a database shared by someone else holds in its text columns.
    for c in _open_feedback(args).latest(args.n):
        said = "-" if c.predicted is None else str(c.predicted)
        if c.confidence is not None:
            said += f" ({c.confidence:.0%})"
        print_text(fileio.one_line(f"{c.id:>6}  {c.created_utc}  label {c.label}  model said {said}"))
    return 0


def cmd_feedback_show(args: argparse.Namespace) -> int:
    from .plots import check_png_name, image_grid, save

    fileio.check_replaceable(check_png_name(args.output), args.overwrite)
    store = _open_feedback(args)
    ids = args.ids or [c.id for c in store.latest(64)]
    images, labels, found = store.images(ids)
    if not found:
        raise MnistkitError(f"{store.path}: no corrections to show" + (f" with ids {args.ids}" if args.ids else ""))
    titles = [f"#{i}: {label}" for i, label in zip(found, labels)]
    print_text(f"wrote {save(image_grid(images, titles, title=f'corrections in {store.path.name}'), args.output)}")
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from .data import check_training_set_target, save_training_set

    fmt = args.format or ("npz" if args.output.lower().endswith(".npz") else "idx")
    check_training_set_target(args.output, fmt)
    images, labels, _ = _open_feedback(args).images()
    if not len(labels):
        raise MnistkitError("no corrections stored yet; nothing to export")
    out = save_training_set(args.output, images, labels, fmt)
    print_text(f"wrote {len(labels)} corrections to {out}")
    return 0


def cmd_feedback_delete(args: argparse.Namespace) -> int:
    deleted = _open_feedback(args).delete(args.ids)
    print_text(f"deleted {deleted} of {len(set(args.ids))} corrections")
    return 0 if deleted == len(set(args.ids)) else 1


# --------------------------------------------------------------------------------------------------
# bench


def add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import ENSEMBLE, MAX_MEMBERS, MAX_SEEDS, TARGETS

    p = sub.add_parser(
        "bench",
        help="time to a target test accuracy for the speed presets, side by side with the tutorial's loop",
        description="Trains each preset with several seeds, each in a fresh process, timing training from the first "
        "step to the end (data loading and testing reported separately), and the tutorial's own loop as the reference.",
    )
    p.add_argument(
        "--preset",
        nargs="+",
        choices=[*sorted(TARGETS), ENSEMBLE],
        default=["fast", "cnn"],
        help=f"presets to run; {ENSEMBLE}: --members runs of --member-preset, their probabilities averaged, timed "
        "as all members' training together [default: fast cnn]",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=5,
        help=f"seeds per preset, 1 to {MAX_SEEDS:,}; for {ENSEMBLE}, how many ensembles, each of --members new "
        "seeds [default: 5]",
    )
    p.add_argument(
        "--members",
        type=int,
        default=3,
        help=f"runs in each {ENSEMBLE}, each with its own seed, 1 to {MAX_MEMBERS} [default: 3]",
    )
    p.add_argument(
        "--member-preset",
        choices=sorted(TARGETS),
        default="best",
        help=f"the preset each member of an {ENSEMBLE} is trained with, as mnistkit train --preset [default: best]",
    )
    p.add_argument(
        "--side-by-side",
        type=int,
        metavar="N",
        default=None,
        help=f"members of an {ENSEMBLE} that train at once, the cores shared among them; its time is then their "
        "wall time [default: one per core on a CPU, 1 on a GPU]",
    )
    p.add_argument(
        "--against",
        choices=["tutorial", "none"],
        default="tutorial",
        help="the reference to run beside [default: tutorial]",
    )
    p.add_argument("--device", choices=DEVICES, default="auto", help="[default: auto]")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the presets' models, as mnistkit train --compile (compiling counts in the training time)",
    )
    p.add_argument(
        "--data", metavar="PATH", default=None, help="train the presets on this data instead of the bundled MNIST"
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_report, run_benchmark

    def log(message: str) -> None:
        print_text(message, file=sys.stderr, flush=True)

    report = run_benchmark(
        args.preset,
        args.seeds,
        args.against == "tutorial",
        args.device,
        log=log,
        data=args.data,
        compile=args.compile,
        members=args.members,
        member_preset=args.member_preset,
        side_by_side=args.side_by_side,
    )
    if args.json:
        print_json(report, indent=2)
    else:
        print_text(format_report(report))
    return 0


# --------------------------------------------------------------------------------------------------
# predict, inspect, export


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify your own images (files, folders, glob patterns) with a trained or the bundled model",
        description="Classify images of any size and format: each is turned into MNIST form (white ink on black, "
        "centred by mass in 28×28) first. A bad image is reported and the others are still predicted; the exit "
        "status is non-zero if any image failed.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE|DIR|GLOB",
        help="image files, folders (walked) or glob patterns; - reads one image from standard input",
    )
    p.add_argument(
        "--model",
        metavar="CHECKPOINT",
        action="append",
        default=None,
        help="a run folder or checkpoint; repeated, an ensemble: the mean of their probabilities "
        "[default: the bundled pretrained convnet]",
    )
    p.add_argument("--top-k", type=int, default=3, help="how many of the most likely classes to show [default: 3]")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument(
        "--reject",
        choices=["on", "off"],
        default="on",
        help="say '? not a digit' when no class fits: the model's not-a-digit score is below its threshold, set so "
        "that 0.1%% of its validation digits are flagged, or (for a digits model) the ink is several marks side by "
        "side, as two digits are; off: always name a digit [default: on]",
    )
    p.add_argument(
        "--show-input",
        metavar="PNG",
        default=None,
        help="save the 28×28 image the model saw (enlarged); with several images, a folder for them",
    )
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_FIGURE_HELP + " (--show-input)")
    p.set_defaults(handler=cmd_predict)


PREDICT_CHUNK = 256  # images preprocessed and classified at a time: output streams, memory stays flat


def cmd_predict(args: argparse.Namespace) -> int:
    from .errors import MnistkitError
    from .inference import Classifier, find_images
    from .preprocess import save_input

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    classifier = Classifier.load(args.model)  # a bad checkpoint stops everything before any image is read
    # "-" is standard input, as for most tools; a file of that name is "./-"
    sources, missing = find_images(["/dev/stdin" if image == "-" else image for image in args.images])
    show = Path(args.show_input) if args.show_input is not None else None
    # A folder for several images, or where one is named (``seen/``: Path drops the slash); else the one PNG.
    named_folder = args.show_input is not None and args.show_input.endswith(("/", os.sep))
    folder = show is not None and (len(sources) > 1 or show.is_dir() or named_folder)
    inputs = {os.path.realpath(source) for source in sources}  # never written over by what the model saw
    if show is not None and not folder:
        _check_show_input(show, inputs, args.overwrite)
    if folder and show is not None:
        fileio.check_folder_exists(show)  # the folder is made, not the folders above it, as -o makes none
        try:
            show.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--show-input {show}: cannot make this folder for the inputs of several images ({exc.strerror or exc})"
            ) from None

    def results():  # folders and patterns without images first, then the images, a chunk at a time
        yield from missing
        for start in range(0, len(sources), PREDICT_CHUNK):
            yield from classifier.predict(
                sources[start : start + PREDICT_CHUNK], top_k=args.top_k, reject=args.reject == "on"
            )

    failed = 0
    for i, result in enumerate(results()):
        if args.json:
            print_json(result.to_dict(), flush=True)
        if not result.ok:
            failed += 1
            print_error(result.error)
            continue
        if not args.json:
            print_text(f"{fileio.one_line(result.source)}: {_verdict(result)}", flush=True)
        if show is not None:
            try:
                seen = show / f"{i:04d}-{Path(result.source).stem}.png" if folder else show
                _check_show_input(seen, inputs, args.overwrite)
                save_input(result.input, seen)
            except MnistkitError as exc:
                failed += 1
                print_error(exc)
    return 2 if failed else 0


def _check_show_input(path: Path, inputs: set[str], overwrite: bool) -> None:
    """ConfigError unless ``path`` is a PNG's name, not one of the images being predicted, and free for a figure
    (``fileio.check_replaceable``)."""
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--show-input {path}: the input is saved as a PNG; give a file name ending in .png")
    if os.path.realpath(path) in inputs:
        raise ConfigError(f"--show-input {path}: this is one of the images to predict; give another file name")
    fileio.check_folder_exists(path)  # before the model's work, not at the end
    fileio.check_replaceable(path, overwrite)


def _verdict(result) -> str:
    """``7 (98.1%)  top 3: …`` or ``? not a digit (looks most like 4, 31.0%)  top 3: …``."""
    top = f"top {len(result.top)}: " + ", ".join(f"{label} {p:.1%}" for label, p in result.top)
    if result.not_a_digit:
        return f"? not a digit (looks most like {result.label}, {result.probability:.1%})  {top}"
    return f"{result.label} ({result.probability:.1%})  {top}"


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="a model's architecture, named parameters with shapes and counts, and training metadata",
        description="Show what print(net) and net.named_parameters() show, readably, plus how a checkpoint was "
        "trained. With no argument: the bundled pretrained model.",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        default=None,
        help="a run folder or checkpoint [default: the bundled pretrained model]",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        default=None,
        help="inspect a fresh (untrained) registry model instead: logreg, mlp, cnn",
    )
    add_cnn_options(p)
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .summary import inspect_checkpoint, inspect_model

    if args.model is not None and args.checkpoint is not None:
        raise ConfigError("give a checkpoint or --model NAME, not both")
    options = {key: getattr(args, key) for key in CNN_OPTIONS if getattr(args, key) is not None}
    if options and args.model is None:
        flags = ["--" + key.replace("_", "-") for key in CNN_OPTIONS]
        raise ConfigError(
            f"{', '.join(flags[:-1])} and {flags[-1]} apply to --model NAME; a checkpoint records its own architecture"
        )
    if args.model is not None:
        print_text(inspect_model(args.model, **options))
    else:
        print_text(inspect_checkpoint(args.checkpoint))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    from .export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a model to ONNX, torch.export, TorchScript or a Hugging Face Hub folder, verified against PyTorch",
        description="Export a checkpoint with a dynamic batch size. The exported model takes float32 pixels "
        "(N, 1, 28, 28) in [0, 1], white ink on black, normalizes them itself and returns class probabilities: "
        "onnx (the dynamo exporter; needs mnistkit[export]), exported-program (a torch.export .pt2 file, for "
        "torch.export.load), torchscript (deprecated by PyTorch) or hf (a Hugging Face Hub model folder: config.json, "
        "model.safetensors and a README.md model card, readable by huggingface_hub's PyTorchModelHubMixin; it holds "
        "the bare network, its normalization in config.json). Nothing "
        "is written unless its outputs match PyTorch's on 1,000 MNIST test images (max abs difference <= 1e-4; ONNX "
        "is run through onnxruntime).",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        default=None,
        help="a run folder, checkpoint or Hugging Face model folder [default: the bundled pretrained model]",
    )
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="[default: onnx]")
    p.add_argument(
        "-o",
        "--out",
        metavar="PATH",
        default=None,
        help="where to write [default: beside the checkpoint, model.onnx / model.pt2 / model.pt / the folder model-hf; "
        "for the bundled model, mnistkit-pretrained.* (mnistkit-pretrained-hf) here]",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file, or the folder of an earlier hf export (never other files)",
    )
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, overwrite=args.overwrite)
    sizes = ", ".join(map(str, result.batch_sizes))
    files = [p for p in result.path.rglob("*") if p.is_file()] if result.path.is_dir() else [result.path]
    size = sum(p.stat().st_size for p in files)
    print_text(
        f"wrote {result.path} ({result.format}, {size / 1e6:.2f} MB); its outputs match PyTorch on "
        f"{result.images:,} test images in batches of {sizes} (max abs difference {result.max_abs_diff:.1e})"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# serve


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page to draw a digit and see what the model thinks, with an HTTP API",
        description="Serve the drawing page at / and the HTTP API under /api (POST /api/predict takes an image upload "
        "or JSON pixels; POST /api/explain takes the same and answers a saliency map and feature maps; POST "
        "/api/feedback stores a correction; GET /api/model, /api/examples, /api/health), with its OpenAPI docs at "
        "/docs. Everything is served locally; nothing is fetched from the internet. Requests must name an allowed "
        "host and arrive without pausing (headers within 10 s, the body within 60 s more); see "
        "docs/serve-security.md.",
    )
    p.add_argument(
        "--model",
        metavar="CHECKPOINT",
        action="append",
        default=None,
        help="a run folder or checkpoint; repeated, an ensemble: the mean of their probabilities "
        "[default: the bundled pretrained convnet]",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 makes it reachable from other machines [default: 127.0.0.1]",
    )
    p.add_argument("--port", type=int, default=8000, help="[default: 8000]")
    p.add_argument(
        "--allow-host",
        dest="allowed_hosts",
        metavar="NAME",
        action="append",
        default=[],
        help="also answer requests addressed to this host name (repeatable); requests for other names get 400, "
        "a guard against DNS rebinding [default: localhost names, IP addresses and --host]",
    )
    p.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="log only warnings and errors: no line per request, nor uvicorn's start and stop lines",
    )
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs [default: cpu]")
    corrections = p.add_mutually_exclusive_group()
    corrections.add_argument(
        "--feedback-db",
        metavar="PATH",
        default=None,
        help=_WithFeedbackDb(
            'the SQLite file where corrections from the page ("Wrong? It was: 4") are stored, created if missing; '
            "mnistkit feedback reads it [default: %(feedback_db)s]"
        ),
    )
    corrections.add_argument(
        "--no-feedback",
        dest="feedback",
        action="store_false",
        help="store no corrections: the page offers none and POST /api/feedback answers 404",
    )
    p.add_argument(
        "--feedback-rate",
        metavar="N/PERIOD",
        default="30/min",
        help="corrections one client address may send: N at once, then N per PERIOD (s, min or h); more are "
        "answered 429 with Retry-After. 0 or off: no limit [default: 30/min, one every 2 s]",
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .feedback import FeedbackError, default_path
    from .server import serve
    from .train import resolve_device

    try:
        serve(
            args.model,
            args.host,
            args.port,
            access_log=args.access_log,
            allowed_hosts=args.allowed_hosts,
            device=resolve_device(args.device).type,
            feedback_db=(args.feedback_db if args.feedback_db is not None else default_path())
            if args.feedback
            else None,
            feedback_rate=args.feedback_rate,
        )
    except FeedbackError as exc:  # only at start-up: a write that fails while serving is that request's 503 or 507
        raise FeedbackError(f"{exc}; or serve without corrections: --no-feedback") from None
    return 0


# --------------------------------------------------------------------------------------------------


COMMANDS = [
    add_train,
    add_presets,
    add_evaluate,
    add_show,
    add_compare,
    add_data,
    add_feedback,
    add_bench,
    add_predict,
    add_inspect,
    add_export,
    add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnistkit",
        description="Train, evaluate and use handwritten-digit classifiers (MNIST and its family) with PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"mnistkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def chosen_parsers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    """``parser``, then the parser of each command ``args`` chose in it: for ``feedback export …``, mnistkit's,
    feedback's and export's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(str(getattr(args, action.dest, "")))
            if chosen is not None:
                return [parser, *chosen_parsers(chosen, args)]
    return [parser]


def command_actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Iterator[argparse.Action]:
    """The arguments of the command that ran: the parser's own, and those of each subcommand chosen, in order."""
    for chosen in chosen_parsers(parser, args):
        yield from (action for action in chosen._actions if not isinstance(action, argparse._SubParsersAction))


def command_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Each option of the command that ran (``batch_size``) with the flag that sets it (``--batch-size``)."""
    flags: dict[str, str] = {}
    for action in command_actions(parser, args):
        if action.option_strings:
            flags.setdefault(action.dest, max(action.option_strings, key=len))
    return flags


# Metavars of the arguments that name a file or folder: an empty one is refused, where the code behind it would read
# it as "not given" (a default database) or as "." (the current folder).
PATH_METAVARS = frozenset(
    {"CHECKPOINT", "DIR", "FILE", "IMAGE|DIR|GLOB", "PATH", "PNG", "RUN", "RUN_OR_CHECKPOINT", "pretrained|RUN"}
)


def check_paths_given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an empty path given to any argument of the command that ran (``--db ''``: a script's unset variable)."""
    for action in command_actions(parser, args):
        value = getattr(args, action.dest, None) if action.metavar in PATH_METAVARS else None
        if "" in (value if isinstance(value, list) else [value]):
            name = max(action.option_strings, key=len) if action.option_strings else str(action.metavar)
            raise ConfigError(f"{name} is empty: give a path")


def with_flags(exc: MnistkitError, flags: dict[str, str]) -> str:
    """The error's message with each option it names shown as its flag: ``lr must be …`` -> ``--lr must be …``.
    A name counts as a word between spaces and brackets, and not right after an option: there it is the
    option's value (``out out: folder exists`` -> ``--out out: …``); so a path that holds the name is kept."""
    message = str(exc)
    if not exc.options:
        return message
    names = "|".join(re.escape(option) for option in exc.options)
    after_option = re.compile(rf"(?:^|[\s(])(?:{names}) $")

    def flag(match: re.Match) -> str:
        option = match.group()
        if after_option.search(message, 0, match.start()):
            return option
        return flags.get(option, "--" + option.replace("_", "-"))

    return re.sub(rf"(?<![^\s(])(?:{names})(?=$|[\s)])", flag, message)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's last flush of what is left in it cannot fail again at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured by a test): nothing is flushed to a pipe at exit
        pass


def _stdout_can_fill() -> bool:
    """Whether standard output goes where a write can run out of space: a file, or a device such as /dev/full;
    not a pipe or a terminal."""
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
        return stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not os.isatty(fd))
    except (AttributeError, OSError, ValueError):  # closed, or not a file (captured by a test)
        return False


def _escape_unprintable() -> None:
    """A file name that is not valid UTF-8 (its bytes kept as surrogates) in a line not printed by ``print_text``
    (argparse's, a library module's) prints escaped, as stderr already does: strict stdout, as
    ``PYTHONIOENCODING=utf-8`` or a UTF-8 locale set it, would stop the command at that name."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _check_working_folder() -> None:
    """ConfigError if the current folder has been deleted: relative paths mean nothing there, and torch's import
    stops the process with a message about its own libraries (oneMKL cannot load libtorch_cpu.so)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise ConfigError(
            "the current folder no longer exists (deleted); cd to a folder that exists and run again"
        ) from None


def main(argv: list[str] | None = None) -> None:
    _escape_unprintable()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for train --nproc, which re-runs it per process
    # Python sets sys.stdout to None when fd 1 is closed (`>&-`), and print() then drops every line unseen. serve
    # answers over HTTP, and may run detached: its lines (the address, the access log) go to stderr instead. Every
    # other command's output would be lost.
    if sys.stdout is None and args.command == "serve":
        sys.stdout = sys.stderr
    if sys.stdout is None:
        print_text(
            "mnistkit: error: standard output is closed; run again with it open (> FILE keeps the output, "
            "> /dev/null drops it)",
            file=sys.stderr,
        )
        sys.exit(MnistkitError.exit_code)
    try:
        _check_working_folder()
        # NumPy before torch: torch imports it from C and clears any error raised meanwhile, so a Ctrl-C landing in
        # that import would be lost, and leave NumPy half-imported (a traceback later, in the middle of training).
        import numpy  # noqa: F401

        check_paths_given(parser, args)
        code = args.handler(args)
    except MnistkitError as exc:
        report_error(str(with_flags(exc, command_flags(parser, args))))
        code = exc.exit_code
    except KeyboardInterrupt:
        print_text("mnistkit: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # Whoever read the output stopped reading (`mnistkit data list | head -1`): end quietly, as `ls | head` does.
        _discard_stdout()
        code = 128 + signal.SIGPIPE  # what a shell reports for a command that the closed pipe stopped
    except OSError as exc:
        if isinstance(exc, io.UnsupportedOperation):  # a stream used as it cannot be: a bug, its traceback says where
            raise
        # Anything else is the environment's fault (a path, its permissions, the disk): one line, as a user error.
        output = ""
        if exc.errno in FULL_DISK and exc.filename is None and _stdout_can_fill():
            output = " to standard output"  # a write without a path: print's, to a file or /dev/full
            _discard_stdout()  # what is left in its buffer would fail again at exit
        report_error(os_error(exc, output))
        code = MnistkitError.exit_code
    except BaseException:
        if not torchrun.launched_by_torchrun():
            raise
        traceback.print_exc()  # a bug: say where, then leave as every worker does
        code = 1
    if torchrun.launched_by_torchrun():
        torchrun.exit_worker(code)  # skips interpreter finalization, where Gloo's threads can abort the process
    sys.exit(code)
