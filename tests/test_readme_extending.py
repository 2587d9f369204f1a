"""The "Extending" example of docs/extending.md (custom data set + custom nn.Sequential) runs as written.

(It lived in the README before the reference material moved to docs/; the README links to it.)"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTENDING = REPO / "docs" / "extending.md"


def _extending_block() -> str:
    text = EXTENDING.read_text()
    section = text.split("## Extending: your data set and your model", 1)
    assert len(section) == 2, "docs/extending.md lost its 'Extending' section"
    match = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert match, "no python block in the Extending section of docs/extending.md"
    return match.group(1)


def test_readme_links_to_the_extending_example():
    assert "docs/extending.md" in (REPO / "README.md").read_text()


def test_readme_extending_example_runs(tmp_path, monkeypatch, capsys):
    from ctxbudget.data.registry import _REGISTRY
    from ctxbudget.models.classifiers import MODELS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(_REGISTRY, "squares", None)  # restored (removed) after the test
    monkeypatch.setitem(MODELS, "tiny-cnn", None)
    exec(compile(_extending_block(), "docs/extending.md:extending", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    m = re.search(r"clean error ([0-9.]+), verified error \(learned budgets\) ([0-9.]+)", out)
    assert m, out
    clean, verified = float(m.group(1)), float(m.group(2))
    assert clean < 0.2                      # the squares are easy: the custom model did learn
    assert clean <= verified <= 1.0
    assert (tmp_path / "runs/squares/final.pt").is_file()


def test_register_dataset_validates_input():
    import numpy as np

    from ctxbudget.data import register_dataset

    x = np.zeros((4, 1, 5, 5), np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        register_dataset("bad", train=(x + 2, y), test=(x, y))
    with pytest.raises(ValueError, match="labels must have shape"):
        register_dataset("bad", train=(x, y[:3]), test=(x, y))
    with pytest.raises(ValueError, match="labels must lie"):
        register_dataset("bad", train=(x, y + 5), test=(x, y), num_classes=2)
    with pytest.raises(ValueError, match="differ in shape"):
        register_dataset("bad", train=(x, y), test=(np.zeros((4, 1, 6, 6), np.float32), y))
    with pytest.raises(TypeError, match="images must be uint8"):
        register_dataset("bad", train=(x.astype(np.int32), y), test=(x, y))
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        register_dataset("bad", train=x, test=(x, y))


def test_register_dataset_from_torch_dataset(monkeypatch):
    import torch
    from torch.utils.data import TensorDataset

    from ctxbudget.data import get_dataset, register_dataset
    from ctxbudget.data.registry import _REGISTRY

    monkeypatch.setitem(_REGISTRY, "tds", None)
    x = torch.rand(6, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    info = register_dataset("tds", train=TensorDataset(x, y), test=(x[:2], y[:2]))
    assert info.num_classes == 3 and info.input_shape == (3, 4, 4)
    ds = get_dataset("tds", "train")
    assert torch.equal(ds.images, x) and torch.equal(ds.labels, y)


def test_register_model_validates_and_builds(monkeypatch):
    from torch import nn

    from ctxbudget.models import get_model, register_model
    from ctxbudget.models.classifiers import MODELS

    monkeypatch.setitem(MODELS, "lin", None)
    with pytest.raises(TypeError, match="callable"):
        register_model("lin", 3)  # type: ignore[arg-type]
    register_model("lin", lambda shape, k, mean=None, std=None: nn.Sequential(nn.Flatten(), nn.Linear(4, k)))
    assert isinstance(get_model("lin", (1, 2, 2), 3), nn.Sequential)
    monkeypatch.setitem(MODELS, "notseq", lambda shape, k, mean=None, std=None: nn.Linear(4, k))
    with pytest.raises(TypeError, match="nn.Sequential"):
        get_model("notseq", (1, 2, 2), 3)
