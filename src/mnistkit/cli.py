"""The ``mnistkit`` command line: a thin layer that parses options and calls library functions.

Every user mistake surfaces as a ``MnistkitError``; ``main`` prints it as one line on stderr and exits
non-zero, never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from . import __version__
from .augment import AUGMENTATIONS
from .config import AMP_MODES, DEVICES, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from .errors import MnistkitError

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# train


def add_train(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model and save a run folder",
        description="Train a model. With no options: the cnn on the bundled MNIST to about 99.2% test accuracy "
        "in about 15 s of training on a 2-core CPU. Options override the --preset, which overrides the defaults.",
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
        help="a folder of IDX files (raw or .gz), the tutorial's mnist.pkl.gz, or a Keras-style .npz",
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
    g.add_argument("--model", default=None, help=f"registered model: logreg, mlp, cnn [default: {defaults.model}]")
    g.add_argument("--width", type=int, default=None, help="channel width of the cnn [default: 16]")
    g.add_argument(
        "--stem-width",
        type=int,
        default=None,
        help="channels of the cnn's first, full-resolution block; 16 is fastest on CPU [default: --width]",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named set of options; 'tutorial' reproduces the tutorial exactly",
    )
    g.add_argument("--epochs", type=int, default=None, help=f"[default: {defaults.epochs}]")
    g.add_argument("--batch-size", type=int, default=None, help=f"[default: {defaults.batch_size}]")
    g.add_argument(
        "--lr", type=float, default=None, help=f"learning rate (the peak for onecycle) [default: {defaults.lr}]"
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"[default: {defaults.optimizer}]")
    g.add_argument("--momentum", type=float, default=None, help=f"SGD momentum [default: {defaults.momentum}]")
    g.add_argument("--nesterov", action="store_const", const=True, default=None, help="Nesterov momentum for SGD")
    g.add_argument("--weight-decay", type=float, default=None, help=f"[default: {defaults.weight_decay}]")
    g.add_argument(
        "--schedule", choices=SCHEDULES, default=None, help=f"learning-rate schedule [default: {defaults.schedule}]"
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
    g.add_argument("--label-smoothing", type=float, default=None, help=f"[default: {defaults.label_smoothing}]")
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
    g.add_argument("--seed", type=int, default=None, help=f"[default: {defaults.seed}]")
    g.add_argument(
        "--deterministic",
        action="store_const",
        const=True,
        default=None,
        help="bitwise-repeatable runs (deterministic kernels)",
    )
    g.add_argument("--device", choices=DEVICES, default=None, help=f"[default: {defaults.device}]")
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=None,
        help="bf16 autocast while training: auto = on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX) [default: auto]",
    )
    g.add_argument("--out", metavar="DIR", default=None, help="run folder [default: runs/<time>-<model>]")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar, only the result lines")
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files into <run>/tensorboard (needs the tensorboard extra)",
    )
    g = p.add_argument_group("resume and scale out")
    g.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue the run in folder RUN from its last checkpoint, with its saved options (Ctrl-C saves one and prints this command)",
    )
    g.add_argument(
        "--checkpoint-every",
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
        help="train with N processes on this machine (torchrun; one per GPU on CUDA, Gloo on CPU); --batch-size stays the global batch",
    )
    p.set_defaults(handler=cmd_train)


CONFIG_OPTIONS = [
    "dataset",
    "data",
    "val_size",
    "normalize",
    "model",
    "width",
    "stem_width",
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
    from contextlib import ExitStack, closing
    from pathlib import Path

    from . import distributed, resume, runs
    from .config import make_config
    from .progress import ConsoleReporter
    from .tensorboard_log import TensorBoardReporter, require_tensorboard
    from .train import Interrupt, check_checkpoint_every, command_line, resolve_device, train_run

    check_checkpoint_every(args.checkpoint_every)
    if args.nproc is not None and not distributed.launched_by_torchrun():
        return distributed.launch(args.nproc, args.argv)  # runs this same command line in each process
    state = None
    if args.resume is not None:
        _refuse_options_with_resume(args)
        cfg, state = resume.open_run(args.resume, device=args.device)
    else:
        cfg = make_config(args.preset, **{name: getattr(args, name) for name in CONFIG_OPTIONS})
    if args.tensorboard:
        require_tensorboard()  # before the run folder exists, so a missing extra leaves nothing behind
    with ExitStack() as stack:
        ctx = stack.enter_context(distributed.process_group(resolve_device(cfg.device)))
        interrupt = stack.enter_context(Interrupt(announce=ctx.is_main))
        distributed.check_batch_size(cfg.batch_size, ctx)
        if state is None:
            run_dir = distributed.on_main(ctx, lambda: runs.create_run_dir(args.out, cfg.model, args.overwrite))
        else:
            run_dir = Path(args.resume) if ctx.is_main else None
        reporter = None
        if ctx.is_main:
            processes = f" in {ctx.world_size} processes ({ctx.backend})" if ctx.distributed else ""
            if state is None:
                print(
                    f"training {cfg.model} on {cfg.data or cfg.dataset} for {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}{processes} -> {run_dir}",
                    flush=True,
                )
            else:
                print(f"resuming {run_dir} at {resume.describe(state)}{processes}", flush=True)
            reporter = stack.enter_context(closing(ConsoleReporter(quiet=args.quiet, batch_size=cfg.batch_size)))
            if args.tensorboard:
                reporter = stack.enter_context(closing(TensorBoardReporter(run_dir, reporter, config=cfg.to_dict())))
        try:
            result = train_run(
                cfg,
                run_dir,
                reporter,
                command=command_line(),
                ctx=ctx,
                resume_from=state,
                checkpoint_every=args.checkpoint_every,
                interrupt=interrupt,
            )
        except BaseException:
            if state is None and run_dir is not None:
                runs.remove_if_empty(run_dir)
            raise
    if run_dir is not None:
        if result.test_accuracy is not None:
            print(f"test accuracy {result.test_accuracy:.2%}  test loss {result.test_loss:.4f}")
        print(f"saved {run_dir}  (evaluate: mnistkit evaluate {run_dir})")
    return 0


def _refuse_options_with_resume(args: argparse.Namespace) -> None:
    """A resumed run keeps its saved options (other values would not continue the same run); only where it
    runs may change (--device, --nproc) and how it reports."""
    from .errors import ConfigError

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


# --------------------------------------------------------------------------------------------------
# evaluate


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="loss, accuracy, per-class precision/recall and confusion matrix of a saved model"
    )
    p.add_argument(
        "checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run folder, or a checkpoint's .safetensors or .json file"
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
        help="write confusion.png and mistakes.png into DIR [default: the checkpoint's folder, i.e. the run folder]",
    )
    plots.add_argument("--no-plots", action="store_true", help="write no plots")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import resolve
    from .evaluate import evaluate_checkpoint, format_report
    from .plots import write_evaluation_plots

    report = evaluate_checkpoint(args.checkpoint, args.split, args.data, args.dataset)
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    if not args.no_plots:
        folder = args.plots or resolve(args.checkpoint).parent
        title = f"{Path(args.checkpoint).name}, {args.split} split of {args.data or args.dataset or 'its own data'}"
        paths = write_evaluation_plots(report, folder, title=title)
        if not args.json:
            print("plots: " + "  ".join(str(path) for path in paths))
    return 0


# --------------------------------------------------------------------------------------------------
# show


def add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw dataset images as a PNG: a labelled grid, or one image large")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="[default: train]")
    p.add_argument(
        "--n", type=int, default=64, help="images in the grid: the first N of the split, 1 to 400 [default: 64]"
    )
    p.add_argument("--digit", type=int, default=None, metavar="D", help="only images of class D")
    p.add_argument(
        "--index",
        type=int,
        default=None,
        metavar="I",
        help="draw the I-th image of the split (of class D with --digit) large instead of a grid",
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
    p.set_defaults(handler=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from .plots import save, show

    figure = show(args.split, args.n, args.digit, args.index, args.data, args.dataset, args.val_size)
    print(f"wrote {save(figure, args.output or ('sample.png' if args.index is not None else 'samples.png'))}")
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
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_figure, format_table, read_runs, to_dict
    from .plots import save

    summaries = read_runs(args.runs)
    print(json.dumps(to_dict(summaries), indent=2) if args.json else format_table(summaries))
    if not args.no_plot:
        path = save(compare_figure(summaries), args.output)
        if not args.json:
            print(f"curves: {path}")
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
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
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
    from .download import describe, format_description

    info = describe(args.name)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from .download import ensure_dataset

    folder = ensure_dataset(args.name)
    print(f"{args.name}: verified files in {folder}")
    return 0


# --------------------------------------------------------------------------------------------------
# bench


def add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import TARGETS

    p = sub.add_parser(
        "bench",
        help="time to a target test accuracy for the speed presets, side by side with the tutorial's loop",
        description="Trains each preset with several seeds, each in a fresh process, timing training from the first "
        "step to the end (data loading and testing reported separately), and the tutorial's own loop as the reference.",
    )
    p.add_argument(
        "--preset",
        nargs="+",
        choices=sorted(TARGETS),
        default=["fast", "cnn"],
        help="presets to run [default: fast cnn]",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per preset [default: 5]")
    p.add_argument(
        "--against",
        choices=["tutorial", "none"],
        default="tutorial",
        help="the reference to run beside [default: tutorial]",
    )
    p.add_argument("--device", choices=DEVICES, default="auto", help="[default: auto]")
    p.add_argument(
        "--data", metavar="PATH", default=None, help="train the presets on this data instead of the bundled MNIST"
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_report, run_benchmark

    log = lambda message: print(message, file=sys.stderr, flush=True)
    report = run_benchmark(args.preset, args.seeds, args.against == "tutorial", args.device, log=log, data=args.data)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
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
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR|GLOB", help="image files, folders (walked) or glob patterns")
    p.add_argument(
        "--model",
        metavar="CHECKPOINT",
        default=None,
        help="a run folder or checkpoint [default: the bundled pretrained convnet]",
    )
    p.add_argument("--top-k", type=int, default=3, help="how many of the most likely classes to show [default: 3]")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument(
        "--reject",
        choices=["on", "off"],
        default="on",
        help="say '? not a digit' when no class fits: the model's not-a-digit score is below the threshold chosen on "
        "held-out data (letters, dots, scribbles, several digits); off: always name a digit [default: on]",
    )
    p.add_argument(
        "--show-input",
        metavar="PNG",
        default=None,
        help="save the 28×28 image the model saw (enlarged); with several images, a folder for them",
    )
    p.set_defaults(handler=cmd_predict)


PREDICT_CHUNK = 256  # images preprocessed and classified at a time: output streams, memory stays flat


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import ConfigError, MnistkitError
    from .inference import Classifier, find_images
    from .preprocess import save_input

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    classifier = Classifier.load(args.model)  # a bad checkpoint stops everything before any image is read
    sources, missing = find_images(args.images)
    show = Path(args.show_input) if args.show_input else None
    folder = show is not None and (len(sources) > 1 or show.is_dir())  # else --show-input names the one PNG
    if folder:
        try:
            show.mkdir(parents=True, exist_ok=True)
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
            print(json.dumps(result.to_dict()), flush=True)
        if not result.ok:
            failed += 1
            print(f"mnistkit: error: {result.error}", file=sys.stderr, flush=True)
            continue
        if not args.json:
            print(f"{result.source}: {_verdict(result)}", flush=True)
        if show is not None:
            try:
                save_input(result.input, show / f"{i:04d}-{Path(result.source).stem}.png" if folder else show)
            except MnistkitError as exc:
                failed += 1
                print(f"mnistkit: error: {exc}", file=sys.stderr, flush=True)
    return 2 if failed else 0


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
        description="Show what print(net) and net.named_parameters() show, readably, plus how a checkpoint was trained. "
        "With no argument: the bundled pretrained model.",
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
    p.add_argument("--width", type=int, default=None, help="channel width for --model cnn")
    p.add_argument(
        "--stem-width", type=int, default=None, help="first block's channels for --model cnn [default: --width]"
    )
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .summary import inspect_checkpoint, inspect_model

    if args.model is not None and args.checkpoint is not None:
        raise ConfigError("give a checkpoint or --model NAME, not both")
    options = {k: v for k, v in {"width": args.width, "stem_width": args.stem_width}.items() if v is not None}
    if options and args.model is None:
        raise ConfigError("--width and --stem-width apply to --model NAME; a checkpoint records its own widths")
    if args.model is not None:
        print(inspect_model(args.model, **options))
    else:
        print(inspect_checkpoint(args.checkpoint))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    from .export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript, verified against PyTorch",
        description="Export a checkpoint with a dynamic batch size. The graph takes float32 pixels (N, 1, 28, 28) in "
        "[0, 1], white ink on black, and returns class probabilities; the file is written only once its outputs match "
        "PyTorch's on 1,000 MNIST test images (max abs difference <= 1e-4; ONNX is run through onnxruntime).",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        default=None,
        help="a run folder or checkpoint [default: the bundled pretrained model]",
    )
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="[default: onnx]")
    p.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        default=None,
        help="where to write [default: beside the checkpoint, model.onnx / model.pt; for the bundled model, mnistkit-pretrained.* here]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, overwrite=args.overwrite)
    sizes = ", ".join(map(str, result.batch_sizes))
    print(
        f"wrote {result.path} ({result.format}, {result.path.stat().st_size / 1e6:.2f} MB); its outputs match PyTorch on "
        f"{result.images:,} test images in batches of {sizes} (max abs difference {result.max_abs_diff:.1e})"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# serve


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page to draw a digit and see what the model thinks, with an HTTP API",
        description="Serve the drawing page at / and the HTTP API under /api (POST /api/predict takes an image upload or "
        "JSON pixels; GET /api/model, /api/health), with its OpenAPI docs at /docs. Everything is served locally; "
        "nothing is fetched from the internet.",
    )
    p.add_argument(
        "--model",
        metavar="CHECKPOINT",
        default=None,
        help="a run folder or checkpoint [default: the bundled pretrained convnet]",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 makes it reachable from other machines [default: 127.0.0.1]",
    )
    p.add_argument("--port", type=int, default=8000, help="[default: 8000]")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(args.model, args.host, args.port, access_log=args.access_log)
    return 0


# --------------------------------------------------------------------------------------------------


COMMANDS = [
    add_train,
    add_evaluate,
    add_show,
    add_compare,
    add_data,
    add_bench,
    add_predict,
    add_inspect,
    add_export,
    add_serve,
]


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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for train --nproc, which re-runs it per process
    try:
        code = args.handler(args)
    except MnistkitError as exc:
        from .distributed import prints_errors

        if prints_errors():  # under torchrun, one line rather than one per process
            print(f"mnistkit: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("mnistkit: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
