"""Every Python example in the README runs (documentation examples are tests)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_examples_run(code, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    if "image" in namespace and "data" in namespace:
        assert namespace["image"].size == (768, 512) and len(namespace["data"]) > 100


def test_readme_has_python_examples():
    assert BLOCKS
