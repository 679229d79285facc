"""End-to-end tests of the benchmark: codecs, run_benchmark outputs and schema, the `bench` command."""
import io
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vqcodec.bench.codecs import CODECS, JPEG, VQCodecAdapter, make_codec
from vqcodec.bench.command import bench
from vqcodec.bench.runner import run_benchmark, subsample

def writable(name: str) -> bool:
    try:
        make_codec(name)
        return True
    except ValueError:
        return False


# the classic codecs this Pillow can write (AVIF only from Pillow 11.3; test_avif_is_there_where_pillow_has_it)
CLASSIC = [n for n in ("jpeg", "webp", "avif", "jpeg2000") if writable(n)]
OUTPUT_FILES = ["results.json", "report.md", "rd_psnr.png", "rd_msssim.png", "compare.png"]
POINT_KEYS = {"quality", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s", "encode_mpps", "decode_mpps"}
ROW_KEYS = {"image", "quality", "bpp", "psnr", "ms_ssim", "encode_s", "decode_s"}
ENV_KEYS = {"cpu", "gpu", "torch", "pillow", "constriction", "vqcodec"}


def synthetic(seed: int, w: int = 192, h: int = 160) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 90 * np.sin((x + seed * 7) / 6.0)], axis=-1)
    return Image.fromarray(np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    synthetic(1).save(folder / "a.png")
    synthetic(2).convert("L").save(folder / "b.png")  # grayscale: must be converted to RGB
    (folder / "notes.txt").write_text("not an image")
    return folder


def check_outputs(out, results, codec_names, n_points, n_images=2):
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    for name in ("rd_psnr.png", "rd_msssim.png", "compare.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert on_disk["images"] == n_images
    assert ENV_KEYS <= set(on_disk["env"])
    assert list(on_disk["codecs"]) == codec_names
    for name, entry in on_disk["codecs"].items():
        assert len(entry["points"]) == n_points
        assert len(entry["per_image"]) == n_points * n_images
        for p in entry["points"]:
            assert POINT_KEYS <= set(p)
            assert p["bpp"] > 0 and 5 < p["psnr"] < 80 and 0 < p["ms_ssim"] <= 1
        for r in entry["per_image"]:
            assert ROW_KEYS <= set(r)
    for metric in ("psnr", "ms_ssim"):
        matrix = on_disk["bd_rate"][metric]
        assert set(matrix) == set(codec_names)
        for test in codec_names:
            assert set(matrix[test]) == set(codec_names)
            assert matrix[test][test] == 0.0
    report = (out / "report.md").read_text()
    assert all(f"### {name}" in report for name in codec_names)
    return on_disk


def test_subsample_keeps_the_ends():
    q = list(range(10))
    assert subsample(q, None) == q
    assert subsample(q, 20) == q
    assert subsample(q, 2) == [0, 9]
    assert subsample(q, 3) == [0, 4, 9] or subsample(q, 3) == [0, 5, 9]
    assert subsample(q, 1) == [5]
    with pytest.raises(ValueError):
        subsample(q, 0)


@pytest.mark.parametrize("name", CLASSIC + ["jpeg444"])
def test_classic_codecs_round_trip_and_rate_grows_with_quality(name):
    codec = make_codec(name)
    image = synthetic(3, 64, 48)
    low, high = codec.encode(image, codec.qualities[0]), codec.encode(image, codec.qualities[-1])
    assert len(low) < len(high)
    decoded = codec.decode(high)
    assert decoded.mode == "RGB" and decoded.size == image.size


def test_avif_is_there_where_pillow_has_it():
    """The declared floor (pillow>=10.0) has no AVIF; 11.3 and newer, as CI installs, must run all four."""
    import PIL

    if tuple(int(v) for v in PIL.__version__.split(".")[:2]) >= (11, 3):
        assert CLASSIC == ["jpeg", "webp", "avif", "jpeg2000"]
    assert {"jpeg", "webp"} <= set(CLASSIC)


def test_a_codec_this_pillow_cannot_write_is_refused_before_the_run(dataset, tmp_path, monkeypatch):
    Image.init()
    monkeypatch.delitem(Image.SAVE, "AVIF", raising=False)
    with pytest.raises(ValueError, match=r"cannot write AVIF \(Pillow 11.3 and newer can\); leave avif out of --codecs"):
        make_codec("avif")
    one_line_error(invoke("--dataset", str(dataset), "--codecs", "jpeg,avif", "--out", str(tmp_path / "o")),
                   "cannot write AVIF")
    assert not (tmp_path / "o").exists()


def test_registry_names():
    assert [make_codec(n).name for n in CLASSIC + ["jpeg444"]] == CLASSIC + ["jpeg444"]
    assert "vqcodec" in CODECS
    with pytest.raises(ValueError, match="valid names"):
        make_codec("bpg")


def test_run_benchmark_classic_codecs(dataset, tmp_path):
    lines = []
    out = tmp_path / "out"
    results = run_benchmark(dataset, CLASSIC, out_dir=out, qualities_per_codec=2, progress=False, echo=lines.append)
    on_disk = check_outputs(out, results, CLASSIC, n_points=2)
    assert len([ln for ln in lines if ln.split()[0] in CLASSIC]) == len(CLASSIC) * 2  # one console row per point
    assert "published" not in on_disk  # not Kodak: no published reference curves
    jpeg = on_disk["codecs"]["jpeg"]["points"]
    assert jpeg[0]["bpp"] < jpeg[1]["bpp"] and jpeg[0]["psnr"] < jpeg[1]["psnr"]
    # the BD-rate matrix is antisymmetric in the log domain: (1 + a/100) * (1 + b/100) == 1
    bd = on_disk["bd_rate"]["psnr"]
    if bd["jpeg"]["webp"] is not None and bd["webp"]["jpeg"] is not None:
        assert (1 + bd["jpeg"]["webp"] / 100) * (1 + bd["webp"]["jpeg"] / 100) == pytest.approx(1, abs=0.2)
    # a second run into the same folder replaces the tool's own files
    run_benchmark(dataset, ["jpeg"], out_dir=out, max_images=1, qualities_per_codec=2, progress=False,
                  echo=lambda s: None, reference_curves=True)
    again = json.loads((out / "results.json").read_text())
    assert again["images"] == 1 and list(again["codecs"]) == ["jpeg"]
    assert "bmshj2018-hyperprior" in again["bd_rate_vs_published"]["psnr"]["jpeg"]


def test_run_benchmark_rejects_bad_input(dataset, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        run_benchmark(tmp_path / "missing", ["jpeg"], out_dir=tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        run_benchmark(tmp_path / "empty", ["jpeg"], out_dir=tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="unique"):
        run_benchmark(dataset, ["jpeg", JPEG()], out_dir=tmp_path / "o", progress=False, echo=lambda s: None)


class FakeCore:
    """Stands in for vqcodec.codec.VQCodec: PNG of a colour-quantised image, with a time split and
    batch methods, to exercise the adapter and the runner's batched path without a model."""

    qualities = [1, 2, 3]

    def __init__(self):
        self.last_timings = {}

    def compress(self, image, quality):
        self.last_timings = {"network_s": 0.001, "prior_s": 0.002, "entropy_s": 0.003}
        arr = np.asarray(image) >> (4 - quality) << (4 - quality)
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    def decompress(self, data):
        self.last_timings = {"network_s": 0.004, "prior_s": 0.005, "entropy_s": 0.006}
        return Image.open(io.BytesIO(data))

    def compress_batch(self, images, quality):
        datas = [self.compress(im, quality) for im in images]
        self.last_timings = {"network_s": 0.01, "prior_s": 0.02, "entropy_s": 0.03}
        return datas

    def decompress_batch(self, datas):
        images = [self.decompress(d) for d in datas]
        self.last_timings = {"network_s": 0.04, "prior_s": 0.05, "entropy_s": 0.06}
        return images


@pytest.mark.parametrize("batch", [False, True])
def test_run_benchmark_with_a_fake_vqcodec(dataset, tmp_path, batch):
    adapter = VQCodecAdapter(codec=FakeCore(), batch=batch)
    results = run_benchmark(dataset, [adapter, "jpeg"], out_dir=tmp_path, qualities_per_codec=2, progress=False,
                            echo=lambda s: None)
    check_outputs(tmp_path, results, ["vqcodec", "jpeg"], n_points=2)
    point = results["codecs"]["vqcodec"]["points"][0]
    assert point["quality"] == 1
    # batched: the split of the whole batch, divided by the number of images
    assert point["time_split"]["encode"]["prior_s"] == pytest.approx(0.02 / 2 if batch else 0.002)
    assert point["time_split"]["decode"]["entropy_s"] == pytest.approx(0.06 / 2 if batch else 0.006)
    assert "time split" in (tmp_path / "report.md").read_text().lower()


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: extra threads only add contention on a busy 2-core CI machine."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_run_benchmark_with_a_tiny_random_vqcodec(dataset, tmp_path, one_torch_thread):
    pytest.importorskip("vqcodec.codec")
    adapter = VQCodecAdapter.random(seed=0)
    assert adapter.model_load_s is not None
    results = run_benchmark(dataset, [adapter, "jpeg"], out_dir=tmp_path, max_images=1, qualities_per_codec=2,
                            progress=False, echo=lambda s: None)
    check_outputs(tmp_path, results, ["vqcodec", "jpeg"], n_points=2, n_images=1)
    entry = results["codecs"]["vqcodec"]
    assert entry["model_load_s"] >= 0
    assert [p["quality"] for p in entry["points"]] == [adapter.qualities[0], adapter.qualities[-1]]
    assert {"network_s", "prior_s", "entropy_s"} <= set(entry["points"][0]["time_split"]["encode"])


# --- the click command -------------------------------------------------------------------------

def invoke(*args, env=None):
    return CliRunner().invoke(bench, list(args), env=env)


def one_line_error(result, text):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], result.output


def test_command_help():
    for flag in ("-h", "--help"):
        result = invoke(flag)
        assert result.exit_code == 0
        for option in ("--dataset", "--codecs", "--device", "--out", "--max-images", "--qualities", "--model"):
            assert option in result.output


def test_command_errors(dataset, tmp_path):
    one_line_error(invoke("--codecs", "jpeg,bpg", "--dataset", str(dataset)), "valid: vqcodec, jpeg")
    one_line_error(invoke("--dataset", str(tmp_path / "missing"), "--codecs", "jpeg"), "not a folder")
    one_line_error(invoke("--codecs", "jpeg", env={"VQCODEC_KODAK": str(tmp_path / "nope")}), "--dataset")
    one_line_error(invoke("--dataset", str(tmp_path), "--codecs", "jpeg", "--out", str(tmp_path / "o")),
                   "no .png/.jpg images")
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("--dataset", str(dataset), "--codecs", "jpeg", "--out", str(tmp_path / "file")),
                   "not a folder")


def test_command_runs(dataset, tmp_path):
    out = tmp_path / "bench"
    result = invoke("--dataset", str(dataset), "--codecs", "jpeg, webp", "--qualities", "2", "--max-images", "1",
                    "--device", "cpu", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["codecs"]) == ["jpeg", "webp"] and results["images"] == 1
    assert math.isfinite(results["bd_rate"]["psnr"]["jpeg"]["webp"] or 0.0)


def test_the_benchmark_runs_without_matplotlib_and_names_its_images(dataset, tmp_path, monkeypatch):
    from vqcodec.bench import report

    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    out = tmp_path / "nomp"
    results = run_benchmark(dataset, ["jpeg"], out_dir=out, qualities_per_codec=2, progress=False, echo=lambda m: None)
    assert not (out / "rd_psnr.png").exists() and results["figures"] is False
    text = (out / "report.md").read_text()
    assert "No figures: matplotlib is not installed" in text and "Images: a.png, b.png." in text


def test_a_kodak_subset_is_not_compared_with_the_published_24_image_means(tmp_path):
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in (1, 2):
        synthetic(i).save(folder / f"kodim{i:02d}.png")
    said = []
    results = run_benchmark(folder, ["jpeg"], out_dir=tmp_path / "out", qualities_per_codec=2, progress=False,
                            echo=said.append)
    assert "bd_rate_vs_published" not in results
    assert "this run has 2, so they are left out" in results["published_note"]
    assert any("left out" in line for line in said)


def test_the_progress_bar_stays_out_of_logs(dataset, tmp_path):
    result = CliRunner().invoke(bench, ["--dataset", str(dataset), "--codecs", "jpeg", "--qualities", "2",
                                        "--out", str(tmp_path / "log")])
    assert result.exit_code == 0, result.output
    assert "it/s" not in result.output and "img/s" not in result.output and "\r" not in result.output


@pytest.mark.parametrize("name, module", [("hevc", "pillow_heif"), ("jxl", "pillow_jxl")])
def test_the_optional_anchors_round_trip_or_say_what_to_install(name, module, monkeypatch):
    import sys

    if writable(name):
        codec = make_codec(name)
        image = synthetic(3)
        low, high = (codec.encode(image, q) for q in (codec.qualities[0], codec.qualities[-1]))
        assert len(low) < len(high)
        err = [np.abs(np.asarray(codec.decode(d), float) - np.asarray(image, float)).mean() for d in (low, high)]
        assert codec.decode(high).size == image.size and codec.decode(high).mode == "RGB"
        assert err[1] < err[0] and err[1] < 10, err
    monkeypatch.setitem(sys.modules, module, None)     # as if the plugin were not installed
    with pytest.raises(ValueError, match=rf"pip install 'vqcodec\[anchors\]' \(or leave {name} out of --codecs\)"):
        make_codec(name)


def test_reuse_adds_an_earlier_runs_codecs_and_refuses_other_images(dataset, tmp_path):
    first = tmp_path / "first"
    invoke("--dataset", str(dataset), "--codecs", "jpeg,webp", "--qualities", "2", "--max-images", "2",
           "--out", str(first), "--no-progress")
    earlier = json.loads((first / "results.json").read_text())
    out = tmp_path / "second"
    result = invoke("--dataset", str(dataset), "--codecs", "jpeg", "--qualities", "2", "--max-images", "2",
                    "--out", str(out), "--no-progress", "--reuse", str(first / "results.json"))
    assert result.exit_code == 0, result.output
    assert f"webp: reused from {first / 'results.json'}" in result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["codecs"]) == ["jpeg", "webp"]                  # jpeg measured again, webp reused
    assert results["codecs"]["webp"]["points"] == earlier["codecs"]["webp"]["points"]
    assert results["codecs"]["webp"]["reused_from"]["created"] == earlier["created"]
    assert "reused_from" not in results["codecs"]["jpeg"]
    assert results["bd_rate"]["psnr"]["jpeg"]["webp"] is not None
    assert "Not re-run here (`--reuse`): webp as measured on" in (out / "report.md").read_text()
    one_line_error(invoke("--dataset", str(dataset), "--codecs", "jpeg", "--max-images", "1", "--out", str(out),
                          "--no-progress", "--reuse", str(first / "results.json")),
                   "was measured on 2 other images, not this run's 1")
    (tmp_path / "junk.json").write_text("{}")
    one_line_error(invoke("--dataset", str(dataset), "--codecs", "jpeg", "--out", str(out), "--no-progress",
                          "--reuse", str(tmp_path / "junk.json")), "not a vqcodec bench results.json")
