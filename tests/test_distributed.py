"""Multi-process training on this CPU: torchrun with Gloo, DistributedDataParallel, the --nproc shortcut."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_all_end, children, write_mnist_npz
from safetensors.torch import load_file

from mnistkit import data, distributed, resume, runs
from mnistkit.config import make_config
from mnistkit.errors import ConfigError
from mnistkit.train import train_run

# Each rank trains as `mnistkit train` does, then writes its own final weights for the test to compare. In
# float32: under bf16 autocast a half batch rounds otherwise than the whole one, and Adam's first steps
# magnify that into up to a point of test accuracy after one epoch (runs of different seeds differ as much).
RANK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    from mnistkit import distributed, runs
    from mnistkit.config import make_config
    from mnistkit.train import resolve_device, train_run

    out, digits = Path(sys.argv[1]), sys.argv[2]
    cfg = make_config(model="mlp", epochs=1, batch_size=128, val_size=0, device="cpu", amp="off", data=digits)
    with distributed.process_group(resolve_device(cfg.device)) as ctx:
        run_dir = ctx.on_main(lambda: runs.create_run_dir(out / "run", cfg.model))
        result = train_run(cfg, run_dir, ctx=ctx)
        save_file(result.model.state_dict(), out / f"rank{ctx.rank}.safetensors")
        if ctx.is_main:
            (out / "accuracy").write_text(repr(result.test_accuracy))
""")


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist) -> Path:
    """12,000 real training digits and the full 10,000 test digits."""
    return write_mnist_npz(tmp_path_factory.mktemp("digits") / "digits.npz", mnist, 12_000)


def files(run_dir: Path) -> set[str]:
    return {
        str(p.relative_to(run_dir).parent / (p.name if "state-" not in p.name else "state-*"))
        for p in run_dir.rglob("*")
    }


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(digits, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(tmp_path),
            str(digits),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"

    single_dir = runs.create_run_dir(tmp_path / "single", "mlp")
    single = train_run(
        make_config(model="mlp", epochs=1, batch_size=128, val_size=0, device="cpu", amp="off", data=str(digits)),
        single_dir,
    )
    multi_accuracy = float((tmp_path / "accuracy").read_text())
    assert abs(multi_accuracy - single.test_accuracy) <= 0.005, (multi_accuracy, single.test_accuracy)
    assert single.test_accuracy > 0.85
    assert files(tmp_path / "run") == files(single_dir)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["processes"] == {"world_size": 2, "backend": "gloo"}
    assert len(runs.read_metrics(tmp_path / "run")) == 1


def test_nproc_launches_torchrun_and_only_rank_0_speaks(tiny_idx, tmp_path):
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "mnistkit",
        "train",
        "--nproc",
        "2",
        "--data",
        str(tiny_idx),
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--val-size",
        "100",
        "--batch-size",
        "64",
        "--quiet",
    ]
    done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"training mlp on {tiny_idx} for 1 epoch in 2 processes (gloo) -> {out}"
    assert [line.split()[0] for line in lines[1:]] == ["epoch", "test", "saved"]
    assert done.stderr == ""
    assert (out / "model.safetensors").is_file() and (out / "resume" / "state.json").is_file()

    refused = subprocess.run(
        [*argv, "--batch-size", "63", "--out", str(tmp_path / "odd")], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "mnistkit: error: --batch-size 63 is the global batch and must divide evenly among 2 processes; "
        "use a multiple of 2"
    ]
    assert not (tmp_path / "odd").exists()


# --------------------------------------------------------------------------------------------------
# In one process everything is a no-op


def test_outside_torchrun_the_context_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    with distributed.process_group(torch.device("cpu")) as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
        assert ctx.on_main(lambda: 42) == 42
        assert ctx.agree(True) and not ctx.agree(False)
        assert ctx.steps_per_epoch(1000, 128) == 8


def test_shards_are_disjoint_and_together_make_the_single_process_batches():
    split = data.Split(torch.zeros(1000, 28, 28, dtype=torch.uint8), torch.arange(1000) % 10)
    split.labels = torch.arange(1000)  # labels as indices, to see which examples each batch holds
    norm = data.Normalization()
    single = [y for _, y in data.batches(split, 128, norm, shuffle=True, generator=torch.Generator().manual_seed(0))]
    shards = [
        [
            y
            for _, y in data.batches(
                split, 128, norm, shuffle=True, generator=torch.Generator().manual_seed(0), rank=r, world_size=2
            )
        ]
        for r in range(2)
    ]
    ctx = distributed.Context(torch.device("cpu"), rank=0, world_size=2)
    assert len(shards[0]) == len(shards[1]) == ctx.steps_per_epoch(1000, 128)
    for step, (a, b) in enumerate(zip(*shards)):
        assert not set(a.tolist()) & set(b.tolist())
        assert set(a.tolist()) | set(b.tolist()) == set(single[step].tolist())


# --------------------------------------------------------------------------------------------------
# Faults: a launcher killed, a worker killed under --max-restarts


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.01)


def resume_state_of(run_dir: Path) -> Path:
    return run_dir / "resume" / "state.json"


def long_run_in_two_processes(
    digits: Path, out: Path | None, cwd: Path | None = None
) -> tuple[subprocess.Popen, list[int]]:
    """`mnistkit train --nproc 2` on a run long enough to stop, once it has saved a first resume state: the
    launcher and its two workers. Without ``out``, the run's folder is the default one under ``cwd``."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "train", "--nproc", "2", "--data", str(digits), "--model", "mlp"]
        + ["--epochs", "50", "--val-size", "0", "--quiet", "--checkpoint-every", "5"]
        + (["--out", str(out)] if out is not None else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    folder, states = (out, "resume/state.json") if out is not None else (cwd or Path(), "runs/*/resume/state.json")
    wait_for(lambda: any(folder.glob(states)), "a first resume state", launcher)
    workers = children(launcher.pid)
    assert len(workers) == 2
    return launcher, workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_their_launcher(digits, tmp_path):
    out = tmp_path / "run"
    launcher, workers = long_run_in_two_processes(digits, out)
    launcher.kill()  # SIGKILL: it can pass nothing on to its workers
    launcher.communicate()
    assert_all_end(workers, "the workers outlived their launcher")
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("named", [True, False])
def test_sigterm_to_the_launcher_stops_its_workers_and_says_how_to_resume(digits, tmp_path, named):
    """What `kill` or a scheduler sends to `mnistkit train --nproc 2`: the workers stop, the last checkpoint stays,
    and the launcher names the run's folder, given (--out) or not."""
    launcher, workers = long_run_in_two_processes(digits, tmp_path / "run" if named else None, cwd=tmp_path)
    launcher.terminate()
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("mnistkit: error: terminated (SIGTERM)") and "Traceback" not in err
    (out,) = [tmp_path / "run"] if named else (tmp_path / "runs").iterdir()
    assert err.strip().endswith(
        f"Resume with: mnistkit train --resume {out if named else out.relative_to(tmp_path)} --nproc 2"
    )
    assert_all_end(workers, "the workers outlived their launcher")
    resume.load(out)  # the last checkpoint, whole


def test_what_a_stopped_launcher_says_depends_on_the_checkpoint_it_leaves(tmp_path):
    from mnistkit.distributed import _what_is_left

    assert _what_is_left(None, 2) == "the run had no checkpoint yet: train it again"
    run_dir = runs.create_run_dir(tmp_path / "run", "mlp")  # stopped while loading the data, say
    assert _what_is_left(run_dir, 2).endswith(f"train it again, with --overwrite to reuse {run_dir}")
    model = torch.nn.Linear(2, 2)
    optimizer, generator, progress = torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator(), resume.LoopState()
    progress.start_epoch(4, torch.device("cpu"), generator)
    resume.save(run_dir, *resume.capture(progress, model, optimizer, None, generator))
    assert _what_is_left(run_dir, 3).endswith(f"Resume with: mnistkit train --resume {run_dir} --nproc 3")


@pytest.mark.slow
def test_a_worker_killed_under_max_restarts_resumes_and_ends_as_a_run_left_alone(digits, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    train = ["--max-restarts", "1", "-m", "mnistkit", "train", "--data", str(digits), "--model", "mlp"]
    train += ["--epochs", "2", "--batch-size", "64", "--val-size", "2000", "--deterministic", "--device", "cpu"]
    train += ["--quiet", "--checkpoint-every", "20"]
    alone = subprocess.run([*torchrun, *train, "--out", str(tmp_path / "alone")], capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr[-3000:]

    out = tmp_path / "killed"
    job = subprocess.Popen(
        [*torchrun, *train, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: resume_state_of(out).exists(), "a first resume state", job)
    os.kill(children(job.pid)[-1], signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr[-3000:]
    assert f"resuming {out} at epoch" in stdout  # the restarted group went on from the resume state

    ours, theirs = load_file(out / "model.safetensors"), load_file(tmp_path / "alone" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    without_time = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in runs.read_metrics(run)]
        for run in (out, tmp_path / "alone")
    ]
    assert without_time[0] == without_time[1]
    assert not (out / runs.CLAIM_NAME).exists()


# --------------------------------------------------------------------------------------------------
# A process group made before mnistkit is called (Ray Train, accelerate)

# Makes the default group as such a framework would, trains through the library, then uses the group again.
EXISTING_GROUP_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from mnistkit.config import make_config
    from mnistkit.session import TrainRequest, train
    from mnistkit.torchrun import exit_worker

    store, out, digits = sys.argv[1:4]
    dist.init_process_group("gloo", store=dist.FileStore(store, 1), rank=0, world_size=1)
    cfg = make_config(model="logreg", epochs=1, val_size=100, device="cpu", data=digits)
    result = train(TrainRequest(config=cfg, out=out, quiet=True))
    alive = dist.is_initialized()
    total = torch.ones(1)
    dist.all_reduce(total)  # the group still works
    print(json.dumps({"alive": alive, "total": total.item(), "processes": result.meta["processes"]}))
    dist.destroy_process_group()
    exit_worker(0)  # as mnistkit's own workers leave: Gloo's threads may still need the GIL at finalization
""")

# Two ranks in a group of their own: mnistkit's collectives run in it, and it outlives the block.
EXISTING_GROUP_RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from mnistkit import distributed
    from mnistkit.torchrun import exit_worker

    store, rank = sys.argv[1], int(sys.argv[2])
    dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
    with distributed.process_group(torch.device("cpu")) as ctx:
        place = [ctx.rank, ctx.world_size, ctx.backend]
        total = ctx.all_sum(torch.tensor([float(rank + 1)])).item()
        voted = ctx.agree(rank == 1)
    after = torch.ones(1)
    dist.all_reduce(after)
    print(json.dumps({"place": place, "total": total, "voted": voted, "alive": dist.is_initialized(),
                      "after": after.item()}))
    dist.destroy_process_group()
    exit_worker(0)
""")


def without_launcher_variables() -> dict[str, str]:
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR")
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("SLURM_")}


@pytest.fixture
def environ(monkeypatch) -> dict[str, str]:
    """This process's environment, less any launcher's variables, as a copy that the test's code may change
    (taking srun's place sets RANK and WORLD_SIZE; left behind, they would make later tests torchrun workers)."""
    env = without_launcher_variables()
    monkeypatch.setattr(os, "environ", env)
    return env


def test_an_existing_process_group_is_used_and_left_alive(tiny_idx, tmp_path):
    script = tmp_path / "existing.py"
    script.write_text(EXISTING_GROUP_SCRIPT)
    out = tmp_path / "run"
    argv = [sys.executable, str(script), str(tmp_path / "store"), str(out), str(tiny_idx)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=without_launcher_variables())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"alive": True, "total": 1.0, "processes": {"world_size": 1, "backend": "gloo"}}
    assert json.loads((out / "model.json").read_text())["processes"] == report["processes"]


def test_two_ranks_of_an_existing_group_work_in_it_and_leave_it_up(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(EXISTING_GROUP_RANK_SCRIPT)
    store, env = str(tmp_path / "store"), without_launcher_variables()
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), store, str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    reports = []
    for rank in ranks:
        stdout, stderr = rank.communicate(timeout=300)
        assert rank.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.splitlines()[-1]))
    for rank, report in enumerate(reports):
        assert report == {"place": [rank, 2, "gloo"], "total": 3.0, "voted": True, "alive": True, "after": 2.0}


# --------------------------------------------------------------------------------------------------
# srun without torchrun


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_task_env(rank: int, tasks: int, master_port: int | None = None) -> dict[str, str]:
    """What srun sets for task ``rank`` of a one-node step, and what a job script exports (MASTER_ADDR and
    MASTER_PORT, when ``master_port`` is given)."""
    env = without_launcher_variables() | {
        "SLURM_JOB_ID": "42",
        "SLURM_NTASKS": str(tasks),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_STEP_TASKS_PER_NODE": str(tasks),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
    }
    if master_port is not None:
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port)}
    return env


def test_srun_tasks_train_as_one_job(tiny_idx, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mnistkit", "train", "--data", str(tiny_idx), "--model", "logreg"]
    argv += ["--epochs", "1", "--val-size", "100", "--batch-size", "64", "--quiet", "--out", str(out)]
    port = free_port()
    tasks = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_task_env(rank, 2, port)
        )
        for rank in (0, 1)
    ]
    results = [task.communicate(timeout=300) + (task.returncode,) for task in tasks]
    assert [code for _, _, code in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert results[0][0].splitlines()[0] == f"training logreg on {tiny_idx} for 1 epoch in 2 processes (gloo) -> {out}"
    assert results[1][0] == "" and results[1][1] == ""  # task 1 trains in the job, silently
    assert json.loads((out / "model.json").read_text())["processes"] == {"world_size": 2, "backend": "gloo"}
    assert [p.name for p in tmp_path.iterdir() if p.name != "tiny"] == ["run"]


def test_srun_tasks_without_a_master_address_are_refused_in_one_line(tiny_idx, tmp_path):
    argv = [sys.executable, "-m", "mnistkit", "train", "--data", str(tiny_idx), "--out", str(tmp_path / "run")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=slurm_task_env(0, 4))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "mnistkit: error: srun started 4 tasks without torchrun, and MASTER_ADDR and MASTER_PORT are not set: "
        "export MASTER_ADDR (the first node) and MASTER_PORT (a free port), or start with srun torchrun as "
        "examples/slurm.sbatch does"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rank", [0, 1])
def test_srun_tasks_given_a_bad_option_say_it_once(tmp_path, rank):
    argv = [sys.executable, "-m", "mnistkit", "train", "--epochs", "0", "--out", str(tmp_path / "run")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=slurm_task_env(rank, 2, 29_999))
    assert done.returncode == 2 and done.stdout == ""
    said = ["mnistkit: error: --epochs must be from 1 to 100,000, got 0"]
    assert done.stderr.splitlines() == (said if rank == 0 else [])  # the first task of the node speaks for all


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"RANK": "0", "WORLD_SIZE": "2"},
            "WORLD_SIZE=2 in the environment asks for 2 processes, but MASTER_ADDR and ",
        ),
        (
            {"RANK": "abc", "WORLD_SIZE": "2"},
            "RANK='abc' in the environment is not a whole number: start with torchrun",
        ),
        (
            {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "RANK=2 in the environment is not below",
        ),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' in the environment is not a whole number"),
    ],
)
def test_launch_variables_left_in_the_environment_are_one_clear_error(environ, variables, message):
    # A shell that kept RANK and WORLD_SIZE from another job: torch.distributed would fail with a traceback.
    from mnistkit import torchrun

    environ |= variables
    with pytest.raises(ConfigError, match=re.escape(message)):
        torchrun.check_launch_environment()


def test_the_place_srun_gives_becomes_torchrun_s_variables(environ):
    from mnistkit import torchrun

    environ |= {"SLURM_STEP_NUM_TASKS": "7", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1"}
    environ |= {"SLURM_STEP_TASKS_PER_NODE": "3(x2),1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    torchrun.adopt_slurm_task()
    assert [environ[n] for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")] == ["5", "7", "1", "3"]
    assert torchrun.launched_by_torchrun() and not torchrun.prints_errors()


def test_a_batch_script_or_a_one_task_step_is_one_process(environ):
    from mnistkit import torchrun

    environ |= {"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}  # the batch script itself: the allocation's tasks, no step
    torchrun.adopt_slurm_task()
    environ["SLURM_STEP_NUM_TASKS"] = "1"
    torchrun.adopt_slurm_task()
    assert "RANK" not in environ and not torchrun.launched_by_torchrun()


@pytest.mark.parametrize("nproc", ["0", "-1", str(10**26)])
def test_an_absurd_nproc_is_one_line_before_any_process_starts(environ, tmp_path, capsys, monkeypatch, nproc):
    from mnistkit.cli import main

    monkeypatch.setattr("torch.distributed.run.run", lambda args: pytest.fail("no process may start"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--nproc", nproc, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    most = distributed.max_processes()
    assert (
        capsys.readouterr().err
        == f"mnistkit: error: --nproc must be from 1 to {most} (4 per CPU core of this machine), got {nproc}\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_bad_option_under_nproc_is_one_line_before_any_process_starts(environ, tmp_path, capsys, monkeypatch):
    # In the processes only process 0 prints; when another failed first, the launcher stopped process 0 unheard.
    from mnistkit.cli import main

    monkeypatch.setattr("torch.distributed.run.run", lambda args: pytest.fail("no process may start"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--nproc", "2", "--epochs", "0", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "mnistkit: error: --epochs must be from 1 to 100,000, got 0\n"


@pytest.mark.parametrize("process_0", ["stopped by the launcher", "failed on an error too"])
def test_an_error_only_another_process_saw_is_said_by_the_launcher(environ, tmp_path, capsys, monkeypatch, process_0):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from mnistkit import torchrun
    from mnistkit.cli import report_error

    error_file = tmp_path / "error.json"
    environ.update(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", TORCHELASTIC_ERROR_FILE=str(error_file))
    report_error("--device cuda: no CUDA GPU is available here; use --device auto or cpu")
    assert capsys.readouterr().err == "" and not torchrun.prints_errors()
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_ERROR_FILE"):
        del environ[name]

    code_0 = -signal.SIGTERM if process_0 == "stopped by the launcher" else 2
    failures = {
        1: ProcessFailure(local_rank=1, pid=2, exitcode=2, error_file=str(error_file)),
        0: ProcessFailure(local_rank=0, pid=1, exitcode=code_0, error_file=str(tmp_path / "none.json")),
    }
    failures[0].timestamp = failures[1].timestamp + 1

    def run(args):
        raise ChildFailedError("mnistkit", failures)

    monkeypatch.setattr("torch.distributed.run.run", run)
    assert distributed.launch(2, ["train"]) == 2
    said = capsys.readouterr().err
    if process_0 == "stopped by the launcher":
        assert said == "mnistkit: error: --device cuda: no CUDA GPU is available here; use --device auto or cpu\n"
    else:
        assert said == ""  # process 0 printed its own


def test_nproc_under_an_srun_step_of_several_tasks_is_refused(environ, tmp_path, capsys):
    from mnistkit.cli import main

    environ |= {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"}
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--nproc", "4", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "mnistkit: error: --nproc starts processes on one machine, but srun started 2 tasks already"
    )
    assert not (tmp_path / "run").exists()
