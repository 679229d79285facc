"""Fuzzing as a habit (issue 9): mutated .vq files are refused cleanly or decode, never anything else.

benchmarks/fuzz.py makes valid files with a tiny random model and mutates them (bit flips, truncations,
splices, header fields and stream tables rewritten with the checksums recomputed, ...). Here: 2000 of its
cases in-process (about 5 s on one core), then a few mutated files through the `vqcodec decompress` command.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vqcodec.cli import cli
from vqcodec.codec import VQCodec
from vqcodec.training_cli import export_model

ROOT = Path(__file__).resolve().parents[1]
CASES = 2000


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("vqcodec_fuzz", ROOT / "benchmarks" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()


@pytest.fixture(scope="module")
def fuzz_codec():
    torch.set_num_threads(1)
    return fuzz.build_codec("tiny")


@pytest.fixture(scope="module")
def corpus(fuzz_codec):
    return fuzz.build_corpus(fuzz_codec)


def _bad_report(bad: list[dict]) -> str:
    return "\n".join(f"seed {b['seed']}: {b['type']}: {b['message']}  [{b['mutation']}]  "
                     f"(replay: python benchmarks/fuzz.py --replay {b['seed']})" for b in bad)


def test_the_corpus_covers_what_it_should(corpus):
    names = " ".join(f.name for f in corpus)
    assert "1x1-" in names and "-alpha" in names and "-meta" in names and "I;16" in names
    assert any(int(re.search(r"-(\d+)tiles", f.name).group(1)) >= 9 for f in corpus)
    assert {re.search(r"-q(\d)-", f.name).group(1) for f in corpus} == {"1", "2", "3", "4", "5"}


def test_cases_are_reproducible(corpus):
    for seed in (0, 7, 12345):
        a, b = fuzz.make_case(seed, corpus), fuzz.make_case(seed, corpus)
        assert (a.data, a.quality, a.description) == (b.data, b.quality, b.description)


def test_the_corpus_does_not_depend_on_the_clock():
    """Replaying a seed needs the same corpus: the ICC profile's creation time is pinned."""
    import time

    import numpy as np
    first = fuzz._metadata_info(np.random.default_rng(0))
    time.sleep(1.1)
    assert fuzz._metadata_info(np.random.default_rng(0)) == first


def test_recomputed_checksums_leave_a_valid_file_unchanged(corpus):
    for f in corpus:
        assert fuzz.recrc(f.data) == f.data
        assert fuzz.Parts.of(f.data).build() == f.data


def test_fuzzing_finds_no_bad_case(fuzz_codec, corpus):
    summary = fuzz.fuzz(fuzz_codec, corpus, CASES, seed=0, time_limit=2.0)
    assert summary["outcomes"]["bad"] == 0, "BAD cases:\n" + _bad_report(summary["bad"])
    assert sum(summary["outcomes"].values()) == CASES
    # the mutations reach every layer: header checks, section checks, the range decoder, and full decodes
    messages = " ".join(summary["messages"])
    for expected in ("checksum mismatch", "does not end where it should", "truncated", "alpha", "metadata"):
        assert expected in messages, expected
    assert summary["outcomes"]["decoded"] > 20
    assert summary["slowest"][0]["seconds"] < 2.0


def test_the_44_byte_bomb_is_refused_at_once():
    import time

    import vqcodec
    from vqcodec.container import TruncatedError
    t = time.perf_counter()
    with pytest.raises(TruncatedError):
        vqcodec.decompress(fuzz.bomb_44())
    assert time.perf_counter() - t < 0.1


def test_a_timeout_and_a_crash_are_bad(corpus):
    class Hangs:
        def decompress(self, data, quality=None):
            while True:
                pass

    class Crashes:
        def decompress(self, data, quality=None):
            raise IndexError("boom")

    case = fuzz.make_case(0, corpus)
    r = fuzz.run_case(Hangs(), case, 0.2)
    assert (r["outcome"], r["type"]) == ("bad", "Timeout")
    r = fuzz.run_case(Crashes(), case, 1.0)
    assert (r["outcome"], r["type"]) == ("bad", "IndexError") and "boom" in r["traceback"]


@pytest.fixture(scope="module")
def fuzz_model_dir(tmp_path_factory, fuzz_codec):
    path = tmp_path_factory.mktemp("models") / fuzz_codec.cfg.name
    export_model(VQCodec.serialize(fuzz_codec.autoencoder, fuzz_codec.prior, fuzz_codec.coarse_codes),
                 fuzz_codec.cfg, {}, path)
    return path


def test_the_command_line_gives_one_line_or_an_image(corpus, fuzz_model_dir, tmp_path):
    """`vqcodec decompress` on mutated files: exit 0 and an image, or exit 1 and one line `Error: ...`."""
    runner = CliRunner()
    seen = set()
    for seed in range(40):
        case = fuzz.make_case(seed, corpus)
        src = tmp_path / f"case{seed}.vq"
        src.write_bytes(case.data)
        out = tmp_path / f"case{seed}.png"
        args = ["decompress", str(src), str(out), "--model", str(fuzz_model_dir)]
        if case.quality is not None:
            args += ["-q", str(case.quality)]
        result = runner.invoke(cli, args, catch_exceptions=True)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"seed {seed} [{case.description}]: {result.exception!r}"
        lines = result.output.strip().splitlines()
        if result.exit_code == 0:
            assert out.is_file(), case.description
            seen.add("decoded")
        else:
            assert result.exit_code == 1, (seed, case.description, result.output)
            assert len(lines) == 1 and lines[0].startswith("Error: "), (seed, case.description, result.output)
            assert "Traceback" not in result.output
            seen.add("refused")
    assert seen == {"decoded", "refused"}
