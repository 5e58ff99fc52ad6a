"""Coverage-guided fuzzing of decode_record with atheris (optional; not run by pytest).

    uv venv --python .venv/bin/python /tmp/fuzz && uv pip install --python /tmp/fuzz/bin/python atheris
    PYTHONPATH=.:.venv/lib/python3.11/site-packages \
        /tmp/fuzz/bin/python tests/fuzz/fuzz_decode.py -atheris_runs=3000000 -max_len=4096 /tmp/corpus

The property is the one of tests/test_decode_fuzz.py: a Decoded obeying the contract or a
DecodeError that is not the "decoder failed" catch-all. Any other outcome aborts the run
and atheris writes the crashing input to ``crash-*``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["service"]):
    from service.decode import decode_record
    from service.errors import DecodeError

from tests.builders import CONFIG, SEEDS, assert_contract


def one_input(data: bytes) -> None:
    try:
        decoded = decode_record(data, CONFIG)
    except DecodeError as exc:
        if exc.reason.startswith("decoder failed"):
            raise
        return
    assert_contract(decoded)


def write_corpus(directory: str) -> None:
    from pathlib import Path

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, seed in SEEDS.items():
        (out / name).write_bytes(seed)


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for directory in corpus:
        write_corpus(directory)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
