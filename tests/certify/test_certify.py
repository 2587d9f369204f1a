"""certify: image files → model input; certificates agree with the bound engine; CLI text, JSON, errors."""
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from PIL import Image

from ctxbudget.bounds import certify
from ctxbudget.certify import certify_images, load_image
from ctxbudget.cli import main
from ctxbudget.data import get_dataset
from ctxbudget.errors import UserError

MNIST = (1, 28, 28)


@pytest.fixture
def digits():
    ds = get_dataset("mnist-sample", "test")
    return ds.images[:4].clone(), ds.labels[:4].clone()


def test_png_rgba_written_by_matplotlib_converts_back_to_grey(digits, tmp_path):
    x = digits[0][0, 0].numpy()
    mpimg.imsave(tmp_path / "d.png", x, cmap="gray", vmin=0, vmax=1)   # RGBA PNG, 8 bits
    assert mpimg.imread(tmp_path / "d.png").shape == (28, 28, 4)
    got = load_image(tmp_path / "d.png", MNIST)
    assert got.shape == MNIST and got.dtype == torch.float32
    assert float((got[0] - torch.from_numpy(x)).abs().max()) <= 1 / 255 + 1e-6


def test_jpeg_resized_and_npy_layouts(digits, tmp_path):
    x = digits[0][1, 0].numpy()
    Image.fromarray((x * 255).round().astype(np.uint8)).resize((56, 56), Image.BILINEAR).save(tmp_path / "d.jpg", quality=95)
    got = load_image(tmp_path / "d.jpg", MNIST)
    assert got.shape == MNIST and 0 <= float(got.min()) and float(got.max()) <= 1
    assert float((got[0] - torch.from_numpy(x)).abs().mean()) < 0.05        # same digit after 2× down
    for name, arr in [("hw", x), ("chw", x[None]), ("hwc", x[:, :, None]), ("u8", (x * 255).round().astype(np.uint8))]:
        np.save(tmp_path / f"{name}.npy", arr)
        got = load_image(tmp_path / f"{name}.npy", MNIST)
        tol = 0.5 / 255 if name == "u8" else 0.0
        assert float((got[0] - torch.from_numpy(x)).abs().max()) <= tol + 1e-7, name


def test_channel_conversions(tmp_path):
    rgb = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "rgb.npy", rgb)
    grey = load_image(tmp_path / "rgb.npy", (1, 8, 8))
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.allclose(grey[0].numpy(), expected, atol=1e-6)
    np.save(tmp_path / "g.npy", rgb[..., 0])
    assert torch.equal(load_image(tmp_path / "g.npy", (3, 8, 8)), torch.from_numpy(rgb[..., 0]).expand(3, 8, 8))
    inv = load_image(tmp_path / "g.npy", (1, 8, 8), invert=True)
    assert torch.allclose(inv[0], 1 - torch.from_numpy(rgb[..., 0]))


@pytest.mark.parametrize("setup,needle", [
    (lambda p: np.save(p / "a.npy", np.zeros((28, 40), np.float32)), "aspect ratio"),
    (lambda p: np.save(p / "a.npy", np.full((28, 28), 2.0, np.float32)), "[0, 1]"),
    (lambda p: np.save(p / "a.npy", np.full((28, 28), np.nan, np.float32)), "finite"),
    (lambda p: np.save(p / "a.npy", np.zeros((28, 28), np.int64)), "pixel type"),
    (lambda p: np.save(p / "a.npy", np.zeros((2, 28, 28), np.float32)), "shape"),
    (lambda p: np.save(p / "a.npy", np.zeros((5, 28, 28, 1), np.float32)), "shape"),
    (lambda p: (p / "a.npy").write_bytes(b"not numpy"), "cannot read"),
    (lambda p: (p / "a.png").write_bytes(b"\x89PNG broken"), "cannot read"),
    (lambda p: (p / "a.gif").write_bytes(b"GIF89a"), "unsupported image format"),
    (lambda p: None, "not found"),
])
def test_bad_images_are_user_errors(tmp_path, setup, needle):
    setup(tmp_path)
    files = sorted(tmp_path.iterdir())
    path = files[0] if files else tmp_path / "missing.png"
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_image(path, MNIST)


def test_stretch_allows_other_aspect_ratios(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((28, 40), np.float32))
    assert load_image(tmp_path / "w.npy", MNIST, stretch=True).shape == MNIST


def test_rgb_model_rejects_two_channel_image(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(UserError):
        load_image(tmp_path / "t.npy", (3, 8, 8))


def test_certificates_use_the_shared_rounding_safe_rule():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.rand(4, 1, 2, 2)
    lo, hi = (x - 0.01).clamp(0, 1), (x + 0.01).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 0])
    lb = torch.tensor([[0.5, 1e-7], [0.5, 0.0], [0.5, -1.0], [2.0, 3.0]])
    correct = torch.tensor([True, True, True, False])
    # 1e-7 lies inside the rounding tolerance: not a certificate (a plain "> 0" would say yes)
    got = certify(model, lo, hi, y, "ibp", lower=lb, correct=correct, x=x).verified
    assert got.tolist() == [False, False, False, False]
    ok = certify(model, lo, hi, y, "ibp", lower=lb + 1.0, correct=correct, x=x).verified
    assert ok.tolist() == [True, True, False, False]


def test_certificates_match_the_bound_engine(tiny_run_dir, digits):
    from ctxbudget.budgets import UniformBudget, input_box
    from ctxbudget.evaluate import margin_lower_bounds
    from ctxbudget.run import load_run

    run = load_run(tiny_run_dir)
    x, y = digits
    with torch.no_grad():
        pred = run.classifier(x).argmax(1)
    y[:2] = pred[:2]                               # untrained: two labels right (certifiable), the rest as given
    outcomes = set()
    for eps0 in (0.3, 1e-4):                       # untrained: nothing certified at 0.3, tiny boxes are
        run.threat.eps0 = eps0
        reports, budgets = certify_images(run, x, labels=y.tolist(), methods=["ibp", "crown-ibp"], attack_steps=5)
        for kind, threat in (("learned", run.threat), ("uniform", UniformBudget(eps0))):
            with torch.no_grad():
                eps = threat(x)
            assert torch.equal(budgets[kind], eps)
            lo, hi = input_box(x, eps)
            for m in ("ibp", "crown-ibp"):
                lb = margin_lower_bounds(run.classifier, lo, hi, y, m).min(1).values
                for i, r in enumerate(reports):
                    assert r["margin_lower_bound"][kind][m] == pytest.approx(float(lb[i]), rel=1e-5, abs=1e-6)
                    assert r["certified"][kind][m] == (bool(lb[i] > 0) and bool(pred[i] == y[i]))
                    outcomes.add(r["certified"][kind][m])
        assert all(r["correct"] == bool(pred[i] == y[i]) for i, r in enumerate(reports))
        geo = reports[0]["budget_stats"]["learned"]["geo_mean"]
        assert geo == pytest.approx(eps0, rel=1e-4)  # the volume constraint, seen from certify
    assert outcomes == {True, False}


def test_certify_cli_text_json_and_maps(tiny_run_dir, digits, tmp_path, capsys):
    x = digits[0]
    mpimg.imsave(tmp_path / "a.png", x[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    np.save(tmp_path / "b.npy", x[1, 0].numpy())
    maps = tmp_path / "maps"
    argv = ["certify", str(tiny_run_dir), str(tmp_path / "a.png"), str(tmp_path / "b.npy"), "--out", str(maps)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("prediction") == 2 and "learned budgets" in text and "uniform eps0 0.3" in text
    assert main(argv + ["--json", "--label", "7", "--label", "2", "--bounds", "ibp"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in doc["images"]] == [7, 2] and doc["methods"] == ["ibp"]
    for r in doc["images"]:
        assert set(r["certified"]) == {"learned", "uniform"} and set(r["certified"]["learned"]) == {"ibp"}
        with open(r["budget_map"], "rb") as fh:
            assert fh.read(4) == b"\x89PNG"


@pytest.mark.parametrize("extra,needle", [
    (["--label", "3"], "--label"),
    (["--bounds", "magic"], "magic"),
    (["--label", "3", "--label", "12"], "label"),
])
def test_certify_cli_errors_exit_2(tiny_run_dir, digits, tmp_path, capsys, extra, needle):
    np.save(tmp_path / "a.npy", digits[0][0, 0].numpy())
    np.save(tmp_path / "b.npy", digits[0][1, 0].numpy())
    argv = ["certify", str(tiny_run_dir), str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(tmp_path / "m")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_certify_cli_bad_image_exit_2(tiny_run_dir, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((10, 30), np.float32))
    assert main(["certify", str(tiny_run_dir), str(tmp_path / "wide.npy"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "aspect ratio" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("size,noted", [((3, 3), True), ((14, 14), False), ((56, 56), False), ((13, 13), True),
                                        ((57, 57), True), ((280, 280), True), ((28, 28), False)])
def test_resize_by_more_than_2x_is_noted(tmp_path, size, noted):
    from ctxbudget.certify import read_image

    np.save(tmp_path / "img.npy", np.full(size, 0.5, np.float32))
    img = read_image(tmp_path / "img.npy", MNIST)
    assert img.x.shape == MNIST and img.original_size == size
    assert (img.note is not None) == noted
    if noted:
        assert f"{size[0]}×{size[1]}" in img.note and "28×28" in img.note
        assert ("up" if size[0] < 28 else "down") in img.note


def test_certify_cli_notes_a_large_resize(tiny_run_dir, digits, tmp_path, capsys):
    """A 3×3 array was silently blown up to 28×28."""
    np.save(tmp_path / "tiny.npy", np.eye(3, dtype=np.float32))
    np.save(tmp_path / "digit.npy", digits[0][0, 0].numpy())
    argv = ["certify", str(tiny_run_dir), str(tmp_path / "tiny.npy"), str(tmp_path / "digit.npy"),
            "--out", str(tmp_path / "m"), "--attack-steps", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "tiny.npy is 3×3" in notes[0] and "9.33× up" in notes[0]
    assert main(argv + ["--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)                                     # stdout stays pure JSON
    tiny, digit = doc["images"]
    assert tiny["original_size"] == [3, 3] and "3×3" in tiny["resize_note"]
    assert digit["original_size"] == [28, 28] and digit["resize_note"] is None
    assert "tiny.npy is 3×3" in captured.err


def test_certify_checks_the_full_soundness_invariant(tiny_run_dir, digits, monkeypatch):
    """A bound that is not a true bound — here above what PGD reaches, though no certified image is
    broken (the labels are wrong, so nothing certifies) — stops certify as it stops evaluate."""
    import ctxbudget.certify.core as core
    from ctxbudget.errors import SoundnessError
    from ctxbudget.run import load_run

    run = load_run(tiny_run_dir)
    x, _ = digits
    with torch.no_grad():
        wrong = (run.classifier(x).argmax(1) + 1) % 10
    certify_images(run, x, labels=wrong.tolist(), methods=["ibp"], attack_steps=5)   # sound: passes
    true_bounds = core.margin_lower_bounds
    monkeypatch.setattr(core, "margin_lower_bounds", lambda *a, **k: true_bounds(*a, **k) + 1e3)
    with pytest.raises(SoundnessError, match="above the margin PGD reached"):
        certify_images(run, x, labels=wrong.tolist(), methods=["ibp"], attack_steps=5)
