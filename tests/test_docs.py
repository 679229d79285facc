"""The docs' figures are the result files' figures.

A table in README.md or a model card that is preceded by a line `<!-- checked: PATH -->` is compared cell by cell
with the JSON file PATH (relative to the repository root), at the precision the cell prints: 22.30 must be the
JSON's value formatted with two decimals. Three kinds of table are known, by their first header cell:

  quality                     rate-distortion points of `vqcodec bench`'s results.json (bpp, PSNR, MS-SSIM)
  BD-rate of vqcodec against  BD-rates of that results.json (Pillow anchors and published curves)
  kodim23, quality 12         benchmarks/speed.py's JSON (whole process, in-process, and the in-process split)
  low rates                   experiments/detail_sample.py's JSON: per quality, the medians of each decoder's
                              image (fidelity, realistic) and of --detail sample's (filled to all stages)

No model is loaded: this test reads text and JSON only.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT / "benchmarks/results/kodak-cpu/results.json"
SPEED = ROOT / "benchmarks/results/speed_cpu.json"
MARKER = re.compile(r"<!-- checked: (\S+) -->")

POINT_ROWS = {"bpp": "bpp", "PSNR (dB)": "psnr", "MS-SSIM": "ms_ssim", "MS-SSIM (dB)": "ms_ssim_db"}
ANCHORS = {"JPEG 4:2:0": "jpeg", "JPEG 4:4:4": "jpeg444", "WebP m6": "webp", "AVIF 4:4:4 s6": "avif",
           "JPEG 2000": "jpeg2000", "HEVC 4:4:4": "hevc", "JPEG XL e7": "jxl"}
METRICS = {"PSNR": "psnr", "MS-SSIM (dB)": "ms_ssim"}
SPEED_COLUMNS = {"whole process": ("whole_process", "{op}_s"), "in-process": ("in_process", "{op}_s"),
                 "network": ("in_process", "{op}_split", "network_s"),
                 "prior": ("in_process", "{op}_split", "prior_s"),
                 "entropy coding": ("in_process", "{op}_split", "entropy_s")}


def bench_model(results: dict) -> str:
    """The model a results.json measured: its vqcodec settings say "vqcodec model NAME on DEVICE, ..."."""
    m = re.match(r"vqcodec model (\S+) on ", results["codecs"]["vqcodec"]["settings"])
    assert m, results["codecs"]["vqcodec"]["settings"]
    return m.group(1)


def model_card() -> Path:
    """The card of the model the Kodak results are for (a new model's run needs its card)."""
    return ROOT / "models" / bench_model(json.loads(KODAK.read_text())) / "MODEL_CARD.md"


def checked_tables(path: Path) -> list[tuple[str, list[list[str]]]]:
    """(JSON path, rows of cells) of every table under a `checked:` marker, the header row first."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = MARKER.search(line)
        if not m:
            continue
        rows = []
        for row in lines[i + 1:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):  # not the |---| line
                rows.append(cells)
        assert rows, f"{path.name} line {i + 1}: a checked: marker with no table under it"
        out.append((m.group(1), rows))
    return out


def printed(value: float, cell: str, signed: bool = False) -> str:
    """value as the cell prints it: the same number of decimals (and a sign when the cell has one)."""
    number = cell.split()[0]
    decimals = len(number.split(".")[1]) if "." in number else 0
    return f"{value:{'+' if signed else ''}.{decimals}f}"


def check_points(results: dict, rows: list[list[str]], where: str) -> int:
    header, *body = rows
    points = {p["quality"]: p for p in results["codecs"]["vqcodec"]["points"]}
    qualities = [int(q) for q in header[1:]]
    assert qualities == sorted(points), f"{where}: qualities {qualities}, results have {sorted(points)}"
    checked = 0
    for label, *cells in body:
        assert label in POINT_ROWS, f"{where}: unknown row {label!r}"
        for q, cell in zip(qualities, cells):
            want = printed(points[q][POINT_ROWS[label]], cell)
            assert cell == want, f"{where}: {label} at quality {q} is {cell}, results.json says {want}"
            checked += 1
    return checked


def check_bd_rates(results: dict, rows: list[list[str]], where: str) -> int:
    header, *body = rows
    checked = 0
    for label, *cells in body:
        metric = METRICS[label]
        for anchor, cell in zip(header[1:], cells):
            if anchor in ANCHORS:
                value = results["bd_rate"][metric]["vqcodec"][ANCHORS[anchor]]
            else:
                value = results["bd_rate_vs_published"][metric]["vqcodec"][anchor]
            assert cell.endswith(" %"), f"{where}: {cell!r}"
            want = printed(value, cell, signed=cell[0] in "+-") + " %"
            assert cell == want, f"{where}: {label} against {anchor} is {cell}, results.json says {want}"
            checked += 1
    return checked


def check_speed(speed: dict, rows: list[list[str]], where: str) -> int:
    header, *body = rows
    checked = 0
    for op, *cells in body:
        assert op in ("compress", "decompress"), f"{where}: unknown row {op!r}"
        for column, cell in zip(header[1:], cells):
            value = speed
            for key in SPEED_COLUMNS[column]:
                value = value[key.format(op=op)]
            want = printed(value, cell)
            assert cell == want, f"{where}: {op}, {column} is {cell}, the speed file says {want}"
            checked += 1
    return checked


LOW_RATE_COLUMNS = {"PSNR": "psnr", "detail": "detail", "MS-SSIM": "ms_ssim"}


def check_low_rates(data: dict, rows: list[list[str]], where: str) -> int:
    """Columns "bpp", or "<PSNR|detail|MS-SSIM> <fidelity|realistic|drawn>"; rows "quality N"."""
    header, *body = rows
    full = max(r["stages"] for r in data["summary"])
    checked = 0
    for label, *cells in body:
        q = int(label.split()[-1])
        for column, cell in zip(header[1:], cells):
            if column == "bpp":
                entry, key = next(r for r in data["summary"] if r["quality"] == q), "bpp"
            else:
                metric, kind = column.split()
                stages = full if kind == "drawn" else None
                decoder = "fidelity" if kind == "drawn" else kind
                entry = next(r for r in data["summary"] if r["quality"] == q and r["decoder"] == decoder and
                             r["stages"] == (stages or r["coded_stages"]))
                key = LOW_RATE_COLUMNS[metric]
            want = printed(entry[key], cell)
            assert cell == want, f"{where}: {label}, {column} is {cell}, the file says {want}"
            checked += 1
    return checked


@pytest.mark.parametrize("doc", ["README.md", "model card"])
def test_checked_tables_match_their_result_files(doc):
    path = ROOT / "README.md" if doc == "README.md" else model_card()
    assert path.exists(), f"no model card for the benchmarked model: {path}"
    tables = checked_tables(path)
    kinds = set()
    for source, rows in tables:
        data = json.loads((ROOT / source).read_text())
        first = rows[0][0]
        where = f"{path.relative_to(ROOT)}, table '{first}' against {source}"
        if first == "quality":
            n = check_points(data, rows, where)
        elif first == "BD-rate of vqcodec against":
            n = check_bd_rates(data, rows, where)
        elif first.startswith("kodim23"):
            n = check_speed(data, rows, where)
        elif first == "low rates":
            n = check_low_rates(data, rows, where)
        else:
            raise AssertionError(f"{where}: no rule for a table whose header starts with {first!r}")
        assert n > 0, where
        kinds.add(first)
    # The results table and the Kodak points must be there (and so be checked), not just pass when missing.
    assert "quality" in kinds, f"{path.name} has no checked rate-distortion table"


def test_docs_speak_of_the_benchmarked_model():
    """The README's and the card's results are for the model the results files measured."""
    results = json.loads(KODAK.read_text())
    model = bench_model(results)
    speed = json.loads(SPEED.read_text())
    assert speed["model"] == model, f"speed_cpu.json measured {speed['model']}, results.json {model}"
    readme = (ROOT / "README.md").read_text()
    results_section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert model in results_section, f"README's Results section does not name {model}"
    whole = speed["whole_process"]
    assert f"`import torch` takes {whole['import_torch_s']:.2f} s" in readme
    assert f"loading the model {speed['model_load_s']:.2f} s" in readme
