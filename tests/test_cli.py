"""The CLI with click's CliRunner: exit codes and exact one-line messages."""
import json

import pytest
from PIL import Image

from vqcodec.cli import cli


def test_every_command_has_help(run):
    for name in list(cli.commands) + [None]:
        for flag in ("-h", "--help"):
            result = run(*(([name] if name else []) + [flag]))
            assert result.exit_code == 0 and "Usage:" in result.output, name


def test_version_is_the_package_version(run):
    """`vqcodec -V`, vqcodec.__version__ and the installed package's metadata agree (pyproject reads it)."""
    from importlib.metadata import version

    import vqcodec

    result = run("--version")
    assert result.exit_code == 0 and result.output == f"vqcodec, version {vqcodec.__version__}\n"
    assert version("vqcodec") == vqcodec.__version__


def test_compress_decompress_info(files, run, tmp_path):
    png, vq, model = files
    out = tmp_path / "out.png"
    result = run("decompress", vq, out, "--model", model)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == Image.open(png).size
    info = json.loads(run("info", vq, "--json").output)
    assert info["model"] == "tiny-test" and info["quality"] == 2 and info["width"] == 37
    assert info["bytes"] == vq.stat().st_size
    assert info["bpp"] == pytest.approx(8 * vq.stat().st_size / (37 * 29), abs=1e-5)
    assert "quality: 2" in run("info", vq).output


def test_existing_output_is_not_overwritten(files, run):
    png, vq, model = files
    before = vq.read_bytes()
    result = run("compress", png, vq, "--model", model, "-q", 1)
    assert result.exit_code == 1
    assert result.output == f"Error: {vq} already exists (use --force to overwrite)\n"
    assert vq.read_bytes() == before
    assert run("compress", png, vq, "--model", model, "-q", 1, "--force").exit_code == 0
    assert vq.read_bytes() != before


@pytest.mark.parametrize("quality", [0, 4])
def test_bad_quality(files, run, tmp_path, quality):
    png, _, model = files
    result = run("compress", png, tmp_path / "x.vq", "--model", model, "-q", quality)
    assert result.exit_code == 1
    assert result.output == f"Error: quality must be an integer from 1 to 3, not {quality}\n"
    assert not (tmp_path / "x.vq").exists()


def test_bad_inputs_give_one_line_errors(files, run, tmp_path):
    png, vq, model = files
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = [
        (("compress", tmp_path / "missing.png", tmp_path / "a.vq", "--model", model, "-q", 1),
         f"Error: no such file: {tmp_path / 'missing.png'}\n"),
        (("compress", text, tmp_path / "a.vq", "--model", model, "-q", 1),
         f"Error: cannot read {text} as an image (UnidentifiedImageError)\n"),
        (("decompress", png, tmp_path / "a.png", "--model", model), "Error: not a .vq file (bad magic bytes)\n"),
        (("info", png), "Error: not a .vq file (bad magic bytes)\n"),
        (("decompress", vq, tmp_path / "a.xyz", "--model", model), None),
        (("decompress", vq, tmp_path / "a.png"),
         "Error: unknown model tiny-test (shipped models: "),
        (("compress", png, tmp_path / "a.vq", "--model", tmp_path / "nomodel"), "Error: not a vqcodec model directory: "),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, args
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
        if message:
            assert result.output.startswith(message), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "in.vq", "notes.txt"]


def test_truncated_and_corrupt_files(files, run, tmp_path):
    _, vq, model = files
    data = vq.read_bytes()
    for name, bad in (("trunc.vq", data[:30]), ("trunc2.vq", data[:-4]),
                      ("flip.vq", data[:50] + bytes([data[50] ^ 1]) + data[51:])):
        path = tmp_path / name
        path.write_bytes(bad)
        result = run("decompress", path, tmp_path / "o.png", "--model", model)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and ("truncated" in result.output or "corrupt" in result.output)
        assert not (tmp_path / "o.png").exists()
