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


# --- the README is an entry page; reference material lives in docs/ --------------------------------

README_MAX_LINES = 200
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_ISSUE = re.compile(r"\bissues?\s+#?\d+", re.I)


def _markdown_pages():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, \
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference material to docs/"


def _without_code(text):
    return re.sub(r"```.*?```", "", text, flags=re.S)                # links and headings in code blocks do not count


def _links(path):
    """(file part, anchor) of every relative link of a Markdown page; file part '' for same-page anchors."""
    for match in _LINK.finditer(_without_code(path.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue                                                  # http(s):, mailto:
        file, _, anchor = target.partition("#")
        yield file, anchor


def _anchors(path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces → hyphens."""
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*$", _without_code(path.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


_LINKED_PAGES = [*_markdown_pages(), REPO / "benchmarks" / "README.md"]


@pytest.mark.parametrize("path", _LINKED_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files(path):
    missing = [f for f, _ in _links(path) if f and not (path.parent / f).exists()]
    assert not missing, f"{path.relative_to(REPO)} links to files that do not exist: {missing}"
    bad = []
    for file, anchor in _links(path):
        target = (path.parent / file) if file else path
        if anchor and target.suffix == ".md" and target.is_file() and anchor not in _anchors(target):
            bad.append(f"{file}#{anchor}")
    assert not bad, f"{path.relative_to(REPO)} links to headings that do not exist: {bad}"


def test_link_checker_sees_links():
    readme_links = [f for f, _ in _links(REPO / "README.md")]
    assert "docs/method.md" in readme_links and "docs/cli.md" in readme_links
    assert "verification-rule-and-soundness-invariant" in _anchors(REPO / "docs" / "method.md")


@pytest.mark.parametrize("path", [*_markdown_pages(), REPO / "benchmarks" / "README.md"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_issue_tracker_references(path):
    """Readers cannot open the project's tracker: no "issue 9" / "issue #11" in the documentation."""
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1) if _ISSUE.search(line)]
    assert not hits, f"{path.relative_to(REPO)} refers to tracker issues:\n" + "\n".join(hits)


def _sources() -> list[Path]:
    return sorted(p for d in ("src", "benchmarks", "scripts", "tests") for p in (REPO / d).rglob("*.py")
                  if p.name != "test_docs.py")


def test_no_issue_tracker_references_in_code():
    """Nor in the code, its comments and docstrings (this file names the pattern it looks for)."""
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in _sources()
            for i, line in enumerate(p.read_text().splitlines(), 1) if _ISSUE.search(line)]
    assert not hits, "tracker issues referred to:\n" + "\n".join(hits)


def test_verification_rule_is_stated_once_in_method_page():
    """The rounding-safe rule (τ = 32·eps·M, float64 re-check) is explained in docs/method.md only;
    the other pages link to it."""
    rule = re.compile(r"τ_?j?\s*=\s*(RTOL_FACTOR|32)\s*·")
    pages = {p.relative_to(REPO).as_posix(): p.read_text() for p in [*_markdown_pages(), REPO / "benchmarks" / "README.md"]}
    stated = [name for name, text in pages.items() if rule.search(text)]
    assert stated == ["docs/method.md"], stated
    assert "method.md#verification-rule-and-soundness-invariant" in pages["docs/cli.md"]
    assert "## Verification rule and soundness invariant" in pages["docs/method.md"]
