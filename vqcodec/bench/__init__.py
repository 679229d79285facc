"""Rate-distortion benchmark: our codec against JPEG, WebP, AVIF and JPEG 2000 on an image folder.

    from vqcodec.bench import run_benchmark
    run_benchmark("benchmarks/kodak", ["vqcodec", "jpeg", "avif"], out_dir="bench-results")

The `bench` click command lives in vqcodec.bench.command. Names below are imported lazily so that
loading the command (for `vqcodec --help`) does not pull in matplotlib.
"""
import importlib

_EXPORTS = {
    "run_benchmark": "runner", "CODECS": "codecs", "DEFAULT_CODECS": "codecs", "Codec": "codecs",
    "make_codec": "codecs", "psnr": "metrics", "ms_ssim": "metrics", "msssim_db": "metrics", "bd_rate": "bdrate",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
