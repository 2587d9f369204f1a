"""The image-folder data source on tiny folders and archives written with Pillow: layout, order,
class list, the on-disk decoded copy, and one test per kind of bad input (the message names the file)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from ctxbudget.cli import main
from ctxbudget.data import DataError, describe, get_dataset, get_info, save_preview
from ctxbudget.data import imagefolder as imf
from ctxbudget.data.decoded_cache import cache_path


def _pixels(ds, files, name):
    """The C×H×W uint8 pixels of the example whose file is ``name``."""
    i = list(files).index(name)
    return (ds.images[i] * 255).round().to(torch.uint8)


def test_folder_layout_labels_and_pixels(image_folder, folder_pixels):
    root = image_folder()
    train = get_dataset("image-folder", "train", path=root)
    test = get_dataset("image-folder", "test", path=str(root))
    assert train.info.classes == ["ant", "bee", "cat"] and train.info.num_classes == 3     # sorted folder names
    assert train.images.shape == (12, 3, 8, 8) and test.images.shape == (6, 3, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [4, 4, 4]
    files = imf.load_image_folder(root).files["train"]
    png = _pixels(train, files, "train/cat/002.png")                         # PNG: lossless
    assert torch.equal(png, torch.from_numpy(folder_pixels("train", "cat", 2)).permute(2, 0, 1))
    assert train.labels[list(files).index("train/cat/002.png")] == 2
    from PIL import Image

    with Image.open(root / "train" / "bee" / "001.jpg") as im:                 # JPEG: as Pillow decodes it
        assert torch.equal(_pixels(train, files, "train/bee/001.jpg"), torch.from_numpy(np.array(im)).permute(2, 0, 1))
    assert len(train.info.mean) == 3 and all(0 < s <= 1 for s in train.info.std)


def test_archives_match_the_folder(image_folder, tmp_path, pack):
    root = image_folder()
    wrapped = image_folder("wrapped", wrapper="my-set")                       # one top-level folder inside
    ref = get_dataset("image-folder", "train", path=root)
    for archive in (wrapped, pack(root, tmp_path / "tiny.tar.gz"), pack(wrapped, tmp_path / "tiny.zip"),
                    pack(root, tmp_path / "tiny.tar")):
        ds = get_dataset("image-folder", "train", path=archive)
        assert torch.equal(ds.images, ref.images) and torch.equal(ds.labels, ref.labels), archive


def test_order_is_fixed_and_class_balanced(image_folder):
    root = image_folder(per_class={"cat": 6, "ant": 6, "bee": 6})
    labels = get_dataset("image-folder", "train", path=root).labels.tolist()
    for n in (3, 6, 9):
        assert sorted(labels[:n]) == sorted([0, 1, 2] * (n // 3)), labels       # every prefix balanced
    assert labels != sorted(labels)
    imf.clear_cache()
    assert get_dataset("image-folder", "train", path=root).labels.tolist() == labels
    order = imf.balanced_order(np.array([0] * 4 + [1] * 2), [f"f{i}" for i in range(6)])
    assert sorted(order.tolist()) == list(range(6)) and [int(i >= 4) for i in order[:3]] == [0, 1, 0]


def test_class_list_sets_the_label_order(image_folder):
    root = image_folder()
    ds = get_dataset("image-folder", "train", path=root, classes=["cat", "bee", "ant"])
    ref = get_dataset("image-folder", "train", path=root)
    assert ds.info.classes == ["cat", "bee", "ant"]
    assert torch.equal(ds.labels, 2 - ref.labels) and torch.equal(ds.images, ref.images)
    with pytest.raises(DataError, match=r"lists dog \(no such class folder\) but not ant") as e:
        get_dataset("image-folder", "train", path=root, classes=["cat", "bee", "dog"])
    assert str(root.resolve()) in str(e.value)
    with pytest.raises(ValueError, match="takes no path"):
        get_dataset("mnist-sample", "train", classes=["a", "b"])
    with pytest.raises(ValueError, match="give its path"):
        get_info("image-folder")


# ------------------------------------------------------------------ bad input: one line naming the file
def test_missing_split(image_folder):
    root = image_folder()
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="is missing") as e:
        get_dataset("image-folder", "train", path=root)
    assert str((root / "test").resolve()) in str(e.value) and "\n" not in str(e.value)


def test_empty_class_folder(image_folder, tmp_path, pack):
    root = image_folder()
    (root / "train" / "dog").mkdir()
    shutil.copy(root / "train" / "cat" / "000.png", root / "train" / "dog" / "000.png")
    (root / "test" / "dog").mkdir()
    (root / "test" / "dog" / ".DS_Store").write_bytes(b"junk")               # hidden files do not count
    with pytest.raises(DataError, match="empty class folder") as e:
        get_dataset("image-folder", "train", path=root)
    assert f"{(root / 'test' / 'dog').resolve()}/ is an empty class folder" in str(e.value)
    archive = pack(root, tmp_path / "empty.tar.gz")
    with pytest.raises(DataError, match=r"test/dog/ in .*empty.tar.gz is an empty class folder"):
        get_dataset("image-folder", "train", path=archive)


def test_corrupt_image(image_folder, tmp_path, pack):
    root = image_folder()
    bad = root / "test" / "ant" / "000.png"
    bad.write_bytes(bad.read_bytes()[:40])                                    # truncated PNG
    with pytest.raises(DataError, match="cannot be decoded as an image") as e:
        get_dataset("image-folder", "test", path=root)
    assert str(bad.resolve()) in str(e.value)
    archive = pack(root, tmp_path / "bad.zip")
    with pytest.raises(DataError, match=r"test/ant/000.png in .*bad.zip cannot be decoded"):
        get_dataset("image-folder", "test", path=archive)


def test_mixed_sizes(image_folder):
    from PIL import Image

    root = image_folder()
    odd = root / "test" / "cat" / "001.png"
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(odd)
    with pytest.raises(DataError, match=r"is 9×8 \(H×W\) but .*train/ant/000.png is 8×8") as e:
        get_dataset("image-folder", "train", path=root)
    assert str(odd.resolve()) in str(e.value) and "resize" in str(e.value)


def test_mixed_channels_says_which_file_is_grey(image_folder):
    from PIL import Image

    root = image_folder()
    grey = root / "train" / "cat" / "003.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(grey)
    with pytest.raises(DataError) as e:
        get_dataset("image-folder", "train", path=root)
    msg = str(e.value)
    assert msg.startswith(f"{grey.resolve()} is grey (mode L) but ") and "train/ant/000.png is colour (mode RGB)" in msg


def test_label_sets_differ_between_splits(image_folder):
    root = image_folder()
    shutil.move(root / "test" / "bee", root / "test" / "wasp")
    with pytest.raises(DataError, match="test/ lacks bee; train/ lacks wasp") as e:
        get_dataset("image-folder", "train", path=root)
    assert str(root.resolve()) in str(e.value)


def test_other_bad_layouts(image_folder, tmp_path, pack):
    from PIL import Image

    root = image_folder()
    stray = root / "train" / "stray.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(stray)
    with pytest.raises(DataError, match=f"{stray.resolve()} lies directly in train/"):
        get_dataset("image-folder", "train", path=root)
    stray.unlink()
    rgba = root / "train" / "cat" / "000.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(rgba)                 # alpha 0: transparent
    with pytest.raises(DataError, match=f"{rgba.resolve()} has transparent pixels"):
        get_dataset("image-folder", "train", path=root)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="neither a folder nor a .tar/.tar.gz/.zip archive"):
        get_dataset("image-folder", "train", path=tmp_path / "notes.txt")
    with pytest.raises(DataError, match="does not exist"):
        get_dataset("image-folder", "train", path=tmp_path / "nowhere")
    (tmp_path / "cut.tar.gz").write_bytes(pack(root, tmp_path / "whole.tar.gz").read_bytes()[:300])
    with pytest.raises(DataError, match="cut.tar.gz"):
        get_dataset("image-folder", "train", path=tmp_path / "cut.tar.gz")


# ------------------------------------------------------------------ the decoded copy on disk
def test_decoded_copy_is_reused_and_rebuilt_when_the_archive_changes(image_folder, tmp_path, monkeypatch, pack):
    from PIL import Image

    root = image_folder()
    archive = pack(root, tmp_path / "tiny.tar.gz")
    first = get_dataset("image-folder", "train", path=archive)
    copy = cache_path(archive)
    assert copy.is_file() and copy.parent == tmp_path / "cache"
    assert not list(copy.parent.glob(".*.tmp"))                               # written through a temp file

    calls = []
    real = imf.decode_source
    monkeypatch.setattr(imf, "decode_source", lambda p: calls.append(p) or real(p))
    imf.clear_cache()
    again = get_dataset("image-folder", "train", path=archive)
    assert calls == [] and torch.equal(again.images, first.images)            # read back, not decoded

    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "train" / "ant" / "000.png")
    pack(root, archive)
    os.utime(archive, ns=(copy.stat().st_mtime_ns + 10**9,) * 2)
    changed = get_dataset("image-folder", "train", path=archive)
    assert len(calls) == 1 and not torch.equal(changed.images, first.images)  # rebuilt
    files = list(imf.load_image_folder(archive).files["train"])
    assert (changed.images[files.index("train/ant/000.png")] * 255).round().eq(7).all()
    assert len(list(copy.parent.glob("*.npz"))) == 1                          # replaced, not added

    copy.write_bytes(b"garbage")                                              # an unreadable copy is rebuilt
    imf.clear_cache()
    assert torch.equal(get_dataset("image-folder", "train", path=archive).images, changed.images)


def test_unwritable_cache_warns_and_still_loads(image_folder, tmp_path, monkeypatch):
    root = image_folder()
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    monkeypatch.setenv("CTXBUDGET_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot write the decoded copy"):
        ds = get_dataset("image-folder", "test", path=root)
    assert len(ds) == 6


# ------------------------------------------------------------------ CLI and info
def test_data_info_and_preview_through_the_cli(image_folder, tmp_path, capsys, pack):
    root = image_folder()
    archive = pack(root, tmp_path / "tiny.zip")
    assert main(["data", "info", "image-folder", "--path", str(archive), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == ["ant", "bee", "cat"] and info["splits"] == {"train": 12, "test": 6}
    assert info["input_shape"] == [3, 8, 8] and info["label_counts"]["train"] == [4, 4, 4] and info["available"]
    assert main(["data", "info", "image-folder", "--path", str(archive), "--classes", "cat,bee,ant"]) == 0
    assert "['cat', 'bee', 'ant']" in capsys.readouterr().out
    assert main(["data", "preview", "image-folder", "--path", str(root), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    shutil.rmtree(root / "test")
    assert main(["data", "info", "image-folder", "--path", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test/ is missing" in err[0]
    assert main(["data", "info", "image-folder"]) == 2
    assert "give its path" in capsys.readouterr().err
    d = describe("image-folder", path=archive)
    assert d["title"].startswith("image folder ") and d["files"]["train"] == [str(archive.resolve())]


def test_preview_of_a_grey_folder(image_folder, tmp_path):
    from PIL import Image

    root = tmp_path / "grey"
    for split in ("train", "test"):
        for cls in ("0", "1"):
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 40 if cls == "0" else 200, np.uint8)).save(root / split / cls / "a.png")
    ds = get_dataset("image-folder", "train", path=root, classes=["1", "0"])
    assert ds.images.shape == (2, 1, 8, 8) and ds.info.classes == ["1", "0"]
    assert save_preview("image-folder", tmp_path / "g.png", path=root, per_class=1).is_file()


# ------------------------------------------------------------------ a run on an image folder
def test_train_one_step_on_an_image_folder_then_evaluate(image_folder, tmp_path, defaults_config, capsys, monkeypatch):
    import yaml

    from ctxbudget.evaluate.evaluate import evaluate_run
    from ctxbudget.run import load_run

    root = image_folder(size=16)                                  # DM-small needs at least 16×16
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--config", defaults_config, "--out", str(out), "--no-progress", "--device", "cpu",
                 "--set", "data.name=image-folder", "--set", "data.path=tiny", "--set", "optim.epochs=1",
                 "--set", "optim.batch_size=12", "--set", "num_threads=1", "--set", "eval.batch_size=6"]) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert stored["path"] == "tiny" and stored["classes"] == ["ant", "bee", "cat"]   # as given; class order recorded
    assert "1 steps/epoch" in (out / "train.log").read_text()
    run = load_run(out)
    assert run.input_shape == (3, 16, 16) and run.data_label == "image-folder (image folder tiny)"
    res = evaluate_run(run, limit=4, liu_limit=0, attack_steps=2, methods=("ibp",), write=False)
    assert res["n"] == 4 and res["data_source"] == run.data_label
    assert root.is_dir()
    capsys.readouterr()
    assert main(["train", "--config", defaults_config, "--out", str(tmp_path / "r2"), "--set",
                 "data.name=image-folder"]) == 2
    assert "data.path is required" in capsys.readouterr().err
