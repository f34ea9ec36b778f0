"""Open-ended, coverage-guided fuzzing of the readers of untrusted files with atheris (libFuzzer).

tests/test_fuzz.py runs the same properties with hypothesis, bounded, on every test run; this script is for
long runs. Any input must give data or mnistkit's DataError; anything else is reported as a crash, with the
input saved by libFuzzer (crash-<hash>) for a regression test.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_readers.py idx -max_total_time=60
    .venv/bin/python fuzz/fuzz_readers.py npz -max_total_time=60
    .venv/bin/python fuzz/fuzz_readers.py pickle -max_total_time=60
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris
import numpy  # noqa: F401  imported uninstrumented: only mnistkit's own code is traced for coverage
import torch  # noqa: F401

with atheris.instrument_imports(include=["mnistkit"]):
    from mnistkit import data
    from mnistkit.errors import DataError

SCRATCH = Path(tempfile.mkdtemp(prefix="mnistkit-fuzz-"))


def read_npz(raw: bytes) -> object:
    path = SCRATCH / "input.npz"  # load_npz reads a path, as the CLI does
    path.write_bytes(raw)
    return data.load_npz(path)


TARGETS = {"idx": data.parse_idx, "npz": read_npz, "pickle": data.safe_unpickle}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    read = TARGETS[sys.argv.pop(1)]

    def one_input(raw: bytes) -> None:
        try:
            read(raw)
        except DataError:
            pass  # the documented outcome for bad input

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
