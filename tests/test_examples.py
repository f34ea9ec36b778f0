"""The cluster examples: examples/slurm.sbatch and examples/k8s-pytorchjob.yaml parse, and the torchrun and
mnistkit command lines they run are ones torchrun and mnistkit accept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from torch.distributed.run import get_args_parser

from mnistkit.cli import build_parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SBATCH = EXAMPLES / "slurm.sbatch"
PYTORCHJOB = EXAMPLES / "k8s-pytorchjob.yaml"


def check_torchrun_command(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None):
    """Parse a torchrun command line as torchrun does (reading PET_* variables as its defaults), and the mnistkit
    command it starts as mnistkit does. Returns both parsed argument sets."""
    assert argv[0] == "torchrun"
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    args = get_args_parser().parse_args(argv[1:])  # argparse exits on anything torchrun does not know
    assert args.module and args.training_script == "mnistkit"
    train = build_parser().parse_args(args.training_script_args)
    assert train.command == "train"
    return args, train


# --------------------------------------------------------------------------------------------------
# Slurm


def test_the_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)


def test_the_sbatch_directives_come_before_any_command():
    # sbatch reads #SBATCH lines only until the first line that is neither a comment nor blank.
    lines = SBATCH.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert all(lines.index(line) < first_command for line in directives)
    options = dict(line.removeprefix("#SBATCH ").split("=", 1) for line in directives)
    assert options["--ntasks-per-node"] == "1"  # one torchrun per node: it starts that node's processes
    assert int(options["--nodes"]) >= 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_sbatch_script_runs_torchrun_once_per_node_with_a_valid_command(tmp_path, monkeypatch):
    # Stand-ins for Slurm's commands: srun records what it would run, scontrol names the nodes.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        '#!/usr/bin/env python3\nimport json, os, sys\njson.dump(sys.argv[1:], open(os.environ["SRUN_LOG"], "w"))\n'
    )
    (bin_dir / "scontrol").write_text(
        '#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[1-2]" ] && printf "node1\\nnode2\\n"\n'
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SRUN_LOG": str(tmp_path / "srun.json"),
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
    }
    done = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    argv = json.loads((tmp_path / "srun.json").read_text())
    args, train = check_torchrun_command(argv, monkeypatch)
    assert (args.nnodes, args.nproc_per_node, args.rdzv_id) == ("2", "4", "4242")
    assert args.rdzv_backend == "c10d" and args.rdzv_endpoint == "node1:29500"
    assert train.out == "runs/slurm-4242"


# --------------------------------------------------------------------------------------------------
# Kubernetes (Kubeflow training operator)


def test_the_pytorchjob_is_a_kubeflow_v1_pytorchjob():
    job = yaml.safe_load(PYTORCHJOB.read_text())
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"]
    assert isinstance(job["spec"]["nprocPerNode"], str)  # the operator's field is a string ("2", "auto", ...)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for spec in replicas.values():
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        assert container["name"] == "pytorch"  # the operator injects its variables into this container
        assert container["image"]
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert mounts <= {v["name"] for v in pod["volumes"]}


def test_the_pytorchjob_runs_a_command_torchrun_and_mnistkit_accept(monkeypatch):
    job = yaml.safe_load(PYTORCHJOB.read_text())
    nodes = sum(spec["replicas"] for spec in job["spec"]["pytorchReplicaSpecs"].values())
    # What the training operator sets in each pod for torchrun.
    pet = {
        "PET_NNODES": str(nodes),
        "PET_NPROC_PER_NODE": job["spec"]["nprocPerNode"],
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "mnistkit-train-master-0",
        "PET_MASTER_PORT": "23456",
    }
    commands = []
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        command = spec["template"]["spec"]["containers"][0]["command"]
        args, train = check_torchrun_command(command, monkeypatch, pet)
        assert (args.nnodes, args.nproc_per_node, args.master_addr) == ("2", "2", "mnistkit-train-master-0")
        assert train.out.startswith("/runs/")
        commands.append(command)
    assert commands[0] == commands[1]  # every pod runs the same command; torchrun gives each its rank
