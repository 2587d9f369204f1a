"""The package documentation stands on its own: no pointers to files users do not have."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"SPEC\.md|SPEC section|shared/reference|reference/(recipes|models)\.md|reference/bounds")


def _user_facing_files():
    files = sorted((REPO / "src" / "ctxbudget").rglob("*.py")) + sorted((REPO / "src" / "ctxbudget").rglob("*.yaml"))
    return files + [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", _user_facing_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_references_to_internal_files(path):
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert not hits, f"{path} points at files users do not have:\n" + "\n".join(hits)


def test_method_page_covers_the_conventions_and_is_linked():
    text = (REPO / "docs" / "method.md").read_text()
    for needle in ["max(x − ε, 0), min(x + ε, 1)",          # clipping
                   "first layer",                            # normalization lives in the model
                   "Σ_i log ε_i = n · log ε0",               # volume constraint
                   "l = α_lo·ε0,   u = min(α_hi·ε0, 1)",     # range
                   "m̲_j > 0 for every j ≠ y",               # verification rule
                   "unsafe set"]:                            # VNN-LIB property convention
        assert needle in text, needle
    assert "docs/method.md" in (REPO / "README.md").read_text()


def test_install_guidance_names_the_cpu_torch_build_the_makefile_uses():
    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    cpu_index = "https://download.pytorch.org/whl/cpu"
    assert f"pip install torch --index-url {cpu_index}" in install
    cpu_block = install.split("CPU build of PyTorch first", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in cpu_block.strip().splitlines()]
    assert lines[0] == f"pip install torch --index-url {cpu_index}"            # torch first,
    assert lines[1].startswith("pip install ctxbudget")                         # then ctxbudget
    assert cpu_index in (REPO / "scripts" / "install_torch.sh").read_text()     # what make test/demo install
    assert 'pip install "ctxbudget[export]"' in install
