"""Fuzzing as a habit (issue 9): mutated .vq files are refused cleanly or decode, never anything else.

benchmarks/fuzz.py makes valid files with a tiny random model and mutates them (bit flips, truncations,
splices, header fields and stream tables rewritten with the checksums recomputed, ...). Here: 2000 of its
cases in-process (about 5 s on one core), then a few mutated files through the `vqcodec decompress` command.
"""
from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vqcodec import container
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
    assert any(container.unpack(f.data).colour_block for f in corpus)          # files with a colour layer
    assert any(int(re.search(r"-(\d+)tiles", f.name).group(1)) >= 9 for f in corpus)
    assert {re.search(r"-q(\d)-", f.name).group(1) for f in corpus} == {"1", "2", "3", "4", "5", "6", "7"}


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
    export_model(fuzz_codec.to_bytes(),
                 fuzz_codec.cfg, {}, path)
    return path


def test_the_command_line_gives_one_line_or_an_image(corpus, fuzz_model_dir, tmp_path):
    """`vqcodec decompress` on mutated files: exit 0 and an image, or exit 1 and one line `Error: ...`."""
    runner = CliRunner()
    seen = set()
    for seed in range(60):       # about one case in ten decodes
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


# --- issue 29's families: lying alpha and metadata sections, broken EXIF, the last-tile-junk bomb ---------------
ISSUE29 = ["alphalie", "metalie", "exif", "junk"]


def test_the_new_families_are_selectable_and_in_the_default_mix(corpus):
    assert fuzz.parse_families("issue29") == ISSUE29
    assert fuzz.parse_families("all") is None and fuzz.parse_families(None) is None
    assert fuzz.parse_families("exif,bitflip") == ["exif", "bitflip"]
    with pytest.raises(ValueError, match="unknown mutation family"):
        fuzz.parse_families("exif,nope")
    for family in ISSUE29:   # selected alone, a family is all a case is made of
        for seed in range(10):
            steps = fuzz.make_case(seed, corpus, [family]).steps
            assert all(step.startswith(family + ":") for step in steps), steps
    seen = {step.split(":")[0] for seed in range(300) for step in fuzz.make_case(seed, corpus).steps}
    assert set(ISSUE29) <= seen, seen


@pytest.mark.parametrize("family", ISSUE29)
def test_each_new_family_finds_no_bad_case(fuzz_codec, corpus, family):
    summary = fuzz.fuzz(fuzz_codec, corpus, 100, seed=0, time_limit=2.0, families=[family])
    assert summary["outcomes"]["bad"] == 0, "BAD cases:\n" + _bad_report(summary["bad"])
    assert set(summary["by_mutation"]) <= {family, "none"}
    # most cases are one mutation without quality=, whose outcome is known and was checked
    main, others = {"alphalie": ("refused", {"decoded"}), "metalie": ("refused", {"decoded"}),
                    "exif": ("saved", set()), "junk": ("refused", set())}[family]
    assert summary["expected"].get(main, {}).get("refused" if main == "refused" else "decoded", 0) >= 20, \
        summary["expected"]
    assert set(summary["expected"]) <= {main} | others, summary["expected"]
    for must, outcomes in summary["expected"].items():
        assert set(outcomes) == {"refused" if must == "refused" else "decoded"}, (must, outcomes)
    assert summary["slowest"][0]["seconds"] < 2.0


def test_a_junk_last_tile_is_a_format_error_in_every_multi_tile_file_stage_and_fill(fuzz_codec, corpus):
    from vqcodec.container import FormatError

    multi = [f for f in corpus if len(fuzz.Parts.of(f.data).streams[0]) > 1]
    assert len(multi) >= 5
    for f in multi:
        for stage in range(len(fuzz.Parts.of(f.data).streams)):
            for fill in fuzz.JUNK_FILLS:
                with pytest.raises(FormatError):
                    fuzz_codec.decompress(fuzz.last_tile_junk(f.data, stage, fill))


def _one_case(corpus, name_prefix, mutate, expect, alpha=None):
    """A Case of one hand-made mutation of the first corpus file whose name starts with name_prefix."""
    base = next(i for i, f in enumerate(corpus) if f.name.startswith(name_prefix))
    parts = fuzz.Parts.of(corpus[base].data)
    what = mutate(parts)
    return fuzz.Case(0, base, parts.build(), None, [what], expect, alpha)


def test_a_lying_alpha_png_that_decodes_is_caught(fuzz_codec, corpus, monkeypatch):
    """With the check that refuses a short alpha PNG gone (issue 29's 189-byte file decoded, its missing rows
    as 0), the fuzzer reports the short plane: the oracle can fail."""
    import random

    import numpy as np

    import vqcodec.images as images

    plane = np.full((29, 37), 200, np.uint8)

    def short(parts):
        parts.alpha = fuzz.alpha_lie("short-rows", plane, random.Random(1))
        parts.flags |= 2
        return "alphalie:short-rows"

    case = _one_case(corpus, "37x29-RGB-", short, "refused", plane)
    assert fuzz.run_case(fuzz_codec, case, 2.0)["outcome"] == "refused"
    monkeypatch.setattr(images, "_check_alpha_png", lambda *a: None)
    r = fuzz.run_case(fuzz_codec, case, 2.0)
    assert (r["outcome"], r["type"]) == ("bad", "Accepted"), r
    # and through the family: some of 150 cases are caught
    summary = fuzz.fuzz(fuzz_codec, corpus, 150, seed=0, families=["alphalie"])
    assert any(b["type"] == "Accepted" for b in summary["bad"]), summary["outcomes"]


def test_a_broken_exif_that_cannot_be_saved_is_caught(fuzz_codec, corpus, monkeypatch):
    """With TIFF's EXIF check gone (issue 29's 68-byte traceback), saving the decoded image fails: SaveError."""
    import vqcodec.images as images

    def garbage(parts):
        fuzz.with_exif(parts, b"garbage")
        return "exif:garbage"

    case = _one_case(corpus, "2x3-L-", garbage, "saved")   # no XMP: with one, Pillow's TIFF writer drops EXIF
    assert fuzz.run_case(fuzz_codec, case, 2.0)["outcome"] == "decoded"
    monkeypatch.setattr(images, "_exif_readable", lambda exif: True)
    r = fuzz.run_case(fuzz_codec, case, 2.0)
    assert (r["outcome"], r["type"]) == ("bad", "SaveError") and "TIFF" in r["message"], r


def test_a_known_outcome_missed_is_bad(corpus):
    """A decoder that accepts the junk bomb, refuses it with a plain ValueError, or refuses a valid file."""
    from PIL import Image

    from vqcodec import container

    junk = _one_case(corpus, "132x129-RGB-", lambda p: "junk:stage0:zeros", "refused")
    junk.data = fuzz.last_tile_junk(junk.data)
    head = container.unpack(junk.data)

    class Accepts:
        def decompress(self, data, quality=None):
            return Image.new("RGB", (head.width, head.height))

    class RefusesPlainly:
        def decompress(self, data, quality=None):
            raise ValueError("no")

    class RefusesWithFormatError:
        def decompress(self, data, quality=None):
            raise container.FormatError("no")

    assert fuzz.run_case(Accepts(), junk, 1.0)["type"] == "Accepted"
    assert fuzz.run_case(RefusesPlainly(), junk, 1.0)["type"] == "WrongRefusal"
    assert fuzz.run_case(RefusesWithFormatError(), junk, 1.0)["outcome"] == "refused"
    valid = _one_case(corpus, "132x129-RGB-", lambda p: "metalie:subset", "decoded")
    assert fuzz.run_case(RefusesWithFormatError(), valid, 1.0)["type"] == "Refused"


def test_the_cli_judge_can_fail(tmp_path):
    """judge_cli on made-up runs: a Python warning, two lines, a traceback, a replaced FIFO, a missing output."""
    import os

    decoded = {"expect": "decoded", "outputs": [(tmp_path / "none.png", (3, 2))]}
    assert "missing" in fuzz.judge_cli(decoded, {"rc": 0, "stdout": b"", "stderr": ""})
    notes_only = {"expect": "decoded"}
    assert fuzz.judge_cli(notes_only, {"rc": 0, "stdout": b"", "stderr": "Note: fine\n"}) is None
    warning = "x.py:3: UserWarning: Corrupt EXIF data\n  warnings.warn(str(msg))\n"
    assert "other than notes" in fuzz.judge_cli(notes_only, {"rc": 0, "stdout": b"", "stderr": warning})
    refused = {"expect": "refused"}
    assert fuzz.judge_cli(refused, {"rc": 1, "stdout": b"", "stderr": "Error: one\n"}) is None
    assert fuzz.judge_cli(refused, {"rc": 1, "stdout": b"", "stderr": "Error: one\nError: two\n"})
    assert fuzz.judge_cli(refused, {"rc": 1, "stdout": b"", "stderr": "Traceback (most recent call last):\n"})
    assert fuzz.judge_cli(refused, {"rc": 0, "stdout": b"", "stderr": "Error: one\n"})
    assert "hung" in fuzz.judge_cli(refused, {"rc": None, "stdout": b"", "stderr": ""})
    fifo = tmp_path / "fifo"
    fifo.write_bytes(b"a PNG where the FIFO was")
    kept = {"expect": "refused", "keep": [(fifo, "fifo")]}
    assert "no longer a fifo" in fuzz.judge_cli(kept, {"rc": 1, "stdout": b"", "stderr": "Error: x\n"})
    fifo.unlink()
    os.mkfifo(fifo)
    assert fuzz.judge_cli(kept, {"rc": 1, "stdout": b"", "stderr": "Error: x\n"}) is None


def test_the_cli_family_finds_nothing_wrong(corpus, fuzz_codec, fuzz_model_dir, tmp_path):
    """Through `python -m vqcodec.cli` (a process each, about 2 s): every kind of broken EXIF to TIFF (whose
    writer parses EXIF) and JPEG, and special outputs (the whole set: `python benchmarks/fuzz.py --cli`)."""
    wanted = ("broken EXIF -> tiff", "broken EXIF -> jpg", "OUT a FIFO", "OUT /dev/null --force", "OUT /dev/stdout")
    checks = fuzz.cli_checks(fuzz_codec, corpus, tmp_path, fuzz_model_dir, big_exif=False, jobs=3,
                             select=lambda name: name.startswith(wanted) and name != "OUT a FIFO --force")
    assert sorted(c["name"].split(" (")[0] for c in checks) == sorted(wanted)
    bad = [f"{c['name']}: {c['problem']}" for c in checks if c["problem"]]
    assert not bad, "\n".join(bad)
    assert any("EXIF is damaged: TIFF cannot hold it" in c["stderr"] for c in checks)


def test_an_exif_too_big_for_jpeg_is_left_out_with_a_note():
    from PIL import Image

    from vqcodec.images import save_image

    im = Image.new("RGB", (8, 8))
    exif = Image.Exif()
    exif[0x010E] = "x" * 70000   # a valid EXIF, as a PNG or TIFF can carry and vqcodec compress keeps
    im.info["exif"] = exif.tobytes()
    notes = []
    save_image(im, io.BytesIO(), "JPEG", notes)   # found by fuzz.py --cli: it raised, refusing the whole image
    assert notes == ["the EXIF (70026 bytes) is longer than a JPEG marker holds: left out"] or \
        notes[0].startswith("the EXIF (") and notes[0].endswith("is longer than a JPEG marker holds: left out")


def test_tiff_keeps_exif_beside_xmp():
    from PIL import Image

    from vqcodec.images import save_image

    exif = Image.Exif()
    exif[0x010F] = "CameraMake"
    im = Image.new("RGB", (8, 8))
    im.info.update(exif=exif.tobytes(), xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">t</x:xmpmeta>')
    buffer, notes = io.BytesIO(), []
    save_image(im, buffer, "TIFF", notes)
    back = Image.open(io.BytesIO(buffer.getvalue()))   # found with the exif family: the EXIF was lost silently
    assert back.getexif().get(0x010F) == "CameraMake" and back.info.get("xmp") == im.info["xmp"] and not notes


def test_every_family_through_the_installed_vqcodec_command(corpus, fuzz_model_dir, tmp_path):
    """Issue 29: each mutation family's hostile files, run by the real `vqcodec` command in a fresh process:
    exit 0 with an image and at most `Note:` lines on stderr, or exit 1 with exactly one `Error:` line."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    jobs = []
    for family in fuzz.FAMILIES:
        for seed in range(2):
            case = fuzz.make_case(seed, corpus, [family])
            src = tmp_path / f"{family}{seed}.vq"
            src.write_bytes(case.data)
            args = ["decompress", str(src), str(tmp_path / f"{family}{seed}.png"), "--model", str(fuzz_model_dir)]
            if case.quality is not None:
                args += ["-q", str(case.quality)]
            jobs.append((family, seed, case.description, args))

    script = Path(sys.executable).with_name("vqcodec")   # the console script pip installed
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "vqcodec.cli"]

    def run(job):
        return subprocess.run([*command, *job[3]], capture_output=True, text=True,
                              timeout=60, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    outcomes = set()
    for (family, seed, description, args), proc in zip(jobs, results):
        what = (family, seed, description, proc.returncode, proc.stderr)
        lines = proc.stderr.splitlines()
        assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, what
        if proc.returncode == 0:
            assert Path(args[2]).is_file() and all(line.startswith("Note: ") for line in lines), what
            outcomes.add("decoded")
        else:
            assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), what
            assert not Path(args[2]).exists(), what
            outcomes.add("refused")
    assert outcomes == {"decoded", "refused"}
