"""Export: ONNX / TorchScript logits equal PyTorch's; VNN-LIB boxes parse back to input_box exactly."""
import csv
import json

import numpy as np
import pytest
import torch

from ctxbudget.budgets import input_box
from ctxbudget.cli import main
from ctxbudget.export import export_torchscript, export_vnnlib, format_bound, read_vnnlib, write_vnnlib
from ctxbudget.models import get_model

CIFAR_STATS = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def _model():
    torch.manual_seed(0)
    return get_model("dm-small", (3, 12, 12), 5, **CIFAR_STATS).eval()


def test_torchscript_scripts_normalize_and_matches(tmp_path):
    model = _model()
    info = export_torchscript(model, (3, 12, 12), tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(5, 3, 12, 12)
    assert torch.allclose(loaded(x), model(x), atol=1e-6, rtol=0)
    assert info["max_abs_diff"] <= 1e-5


def test_scripted_normalize_handles_2d_and_4d():
    from ctxbudget.models import Normalize

    norm = torch.jit.script(Normalize([0.5, 0.25], [2.0, 4.0]))
    x = torch.rand(3, 2, 4, 4)
    assert torch.equal(norm(x), (x - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([2.0, 4.0]).view(1, 2, 1, 1))
    assert torch.equal(norm(x[:, :, 0, 0]), (x[:, :, 0, 0] - torch.tensor([0.5, 0.25])) / torch.tensor([2.0, 4.0]))


def test_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from ctxbudget.export import export_onnx

    model = _model()
    info = export_onnx(model, (3, 12, 12), tmp_path / "m.onnx")
    assert info["checked_with"] and info["max_abs_diff"] < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(7, 3, 12, 12)                      # a batch size the export never saw
    out = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-4


def test_logit_check_catches_a_different_model():
    from ctxbudget.errors import UserError
    from ctxbudget.export import check

    model = _model()
    x = torch.rand(4, 3, 12, 12)
    wrong = model(x).detach().numpy() + 1e-2
    with pytest.raises(UserError, match="differ from PyTorch"):
        check.check_logits(model, x, wrong, "probe")


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 0.3, 1e-8, 0.1 + 1e-9, 0.99999994, 2.0 ** -40, 0.30000001])
def test_format_bound_round_trips_float32_exactly(value):
    text = format_bound(value)
    assert "e" not in text.lower() and not text.startswith("-")
    assert float(text) == float(np.float32(value))            # parsed as float64: exactly the float32 value
    assert np.float32(float(text)) == np.float32(value)


def test_format_bound_random_values_round_trip():
    vals = np.random.default_rng(0).random(20000).astype(np.float32)
    vals[:100] *= np.float32(1e-6)
    back = np.array([float(format_bound(v)) for v in vals])
    assert np.array_equal(back, vals.astype(np.float64))


def test_write_read_vnnlib_and_bad_input(tmp_path):
    lo = np.array([0.0, 0.25, 0.5], np.float32)
    hi = np.array([0.1, 0.75, 1.0], np.float32)
    write_vnnlib(tmp_path / "p.vnnlib", lo, hi, label=2, num_classes=4)
    back = read_vnnlib(tmp_path / "p.vnnlib")
    assert np.array_equal(back["lower"], lo) and np.array_equal(back["upper"], hi)
    assert back["label"] == 2 and back["num_classes"] == 4
    text = (tmp_path / "p.vnnlib").read_text()
    # the unsafe set: every j != y with Y_j >= Y_y, nothing else
    assert "(and (>= Y_0 Y_2))" in text and "(and (>= Y_3 Y_2))" in text and "Y_2 Y_2" not in text
    with pytest.raises(ValueError, match="lower <= upper"):
        write_vnnlib(tmp_path / "q.vnnlib", hi, lo, 0, 4)
    with pytest.raises(ValueError, match="label"):
        write_vnnlib(tmp_path / "q.vnnlib", lo, hi, 4, 4)
    (tmp_path / "r.vnnlib").write_text(text.replace("(assert (<= X_1 0.75))", ""))
    with pytest.raises(ValueError, match="lack"):
        read_vnnlib(tmp_path / "r.vnnlib")


def test_export_vnnlib_boxes_equal_input_box(tiny_run_dir, tmp_path):
    from ctxbudget.budgets import UniformBudget
    from ctxbudget.data import get_dataset
    from ctxbudget.run import load_run

    run = load_run(tiny_run_dir)
    ds = get_dataset("mnist-sample", "test")
    x, y = ds.images[:6], ds.labels[:6]
    out = tmp_path / "v"
    manifest = export_vnnlib(run, x, y, out, kinds=("learned", "uniform"), timeout=60, write_model=False)
    with torch.no_grad():
        expected = {"learned": input_box(x, run.budgets(x)), "uniform": input_box(x, UniformBudget(0.3)(x))}
    assert expected["learned"][0].ne(expected["uniform"][0]).any()   # the two kinds really differ
    assert len(manifest["examples"]) == 6
    for n, ex in enumerate(manifest["examples"]):
        for kind, (lo, hi) in expected.items():
            back = read_vnnlib(out / ex["files"][kind])
            assert back["label"] == int(y[n]) and back["num_classes"] == 10
            assert np.array_equal(back["lower"], lo[n].reshape(-1).numpy().astype(np.float64))
            assert np.array_equal(back["upper"], hi[n].reshape(-1).numpy().astype(np.float64))
            assert back["lower"].min() >= 0 and back["upper"].max() <= 1
    rows = list(csv.reader((out / "instances.csv").open()))
    assert len(rows) == 12 and all(r[0] == "model.onnx" and (out / r[1]).is_file() and r[2] == "60" for r in rows)
    cfg = (out / "abcrown.yaml").read_text()
    assert "csv_name: instances.csv" in cfg and str(out.resolve()) in cfg and "num_outputs: 10" in cfg
    assert json.loads((out / "manifest.json").read_text())["kinds"] == ["learned", "uniform"]


def test_export_cli_all_formats(tiny_run_dir, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "e"
    for fmt in ("onnx", "torchscript"):
        assert main(["export", str(tiny_run_dir), "--format", fmt, "--out", str(out)]) == 0
    assert main(["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "3", "--out", str(out / "v")]) == 0
    text = capsys.readouterr().out
    assert "logits match PyTorch" in text and "equals input_box" in text
    assert "ctxbudget's verdicts (ibp, crown-ibp; manifest.json)" in text and "of 3 instances" in text
    assert (out / "model.onnx").is_file() and (out / "model.pt").is_file() and (out / "v/model.onnx").is_file()
    import onnx
    model = onnx.load(str(out / "v/model.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 28, 28]                      # batch 1 for complete verifiers


@pytest.mark.parametrize("argv,needle", [
    (["--format", "vnnlib", "--limit", "0"], "--limit"),
    (["--format", "vnnlib", "--timeout", "-1"], "timeout"),
])
def test_export_errors_exit_2(tiny_run_dir, tmp_path, capsys, argv, needle):
    assert main(["export", str(tiny_run_dir), "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_export_missing_run_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "no run directory or registered model named" in capsys.readouterr().err


def test_onnx_missing_dependency_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    from ctxbudget.errors import UserError
    from ctxbudget.export.to_onnx import export_onnx

    with pytest.raises(UserError, match=r"ctxbudget\[export\]"):
        export_onnx(_model(), (3, 12, 12), tmp_path / "m.onnx")



def test_vnnlib_without_onnx_fails_before_writing(tiny_run_dir, tmp_path, monkeypatch):
    import builtins

    from ctxbudget.data import get_dataset
    from ctxbudget.errors import UserError
    from ctxbudget.run import load_run

    run = load_run(tiny_run_dir)
    ds = get_dataset("mnist-sample", "test")
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnx" else real_import(name, *a, **k))
    with pytest.raises(UserError, match=r"ctxbudget\[export\]"):
        export_vnnlib(run, ds.images[:2], ds.labels[:2], tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_check_script_rejects_a_changed_file_and_states_last_bit_noise(tiny_run_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "v"
    assert main(["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "2", "--budget", "both",
                 "--out", str(out)]) == 0
    env = {**os.environ, "PYTHONPATH": str(repo / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(repo / "scripts/check_vnnlib_export.py"), str(tiny_run_dir), str(out), "--samples", "4"]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "exactly" in ok.stdout, ok.stderr
    f = out / "vnnlib/learned_00001.vnnlib"
    text = f.read_text()
    m = re.search(r"\(assert \(<= X_200 ([0-9.]+)\)\)", text)
    bumped = float(np.nextafter(np.float32(float(m.group(1))), np.float32(2)))
    f.write_text(text.replace(m.group(0), f"(assert (<= X_200 {format_bound(bumped)}))"))
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "differs from the export" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    # the same one-ulp change with the manifest's sha256 updated: a box recomputed elsewhere (another batch,
    # thread count or CPU kind) differs like this; it is reported and the box is checked as written
    import hashlib
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["examples"][1]["sha256"]["learned"] = hashlib.sha256(f.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    noisy = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert noisy.returncode == 0, noisy.stderr
    assert "1 of" in noisy.stdout and "by at most 1 ulp" in noisy.stdout and "checked as written" in noisy.stdout

    # far apart (not last-bit noise): fails with one line
    far = float(np.float32(bumped) + np.float32(1e-3))
    f.write_text(f.read_text().replace(f"(assert (<= X_200 {format_bound(bumped)}))", f"(assert (<= X_200 {format_bound(far)}))"))
    manifest["examples"][1]["sha256"]["learned"] = hashlib.sha256(f.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    wrong = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert wrong.returncode == 1 and "ulp" in wrong.stderr and "differs from this machine's box" in wrong.stderr


def test_uniform_run_exports_uniform_boxes_only(tiny_run_dir, tmp_path, capsys):
    import yaml

    cfg_path = tiny_run_dir / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["budget"]["kind"] = "uniform"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "1", "--budget", "both",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--budget uniform" in capsys.readouterr().err
    assert main(["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "1", "--out", str(tmp_path / "u")]) == 0
    files = sorted(p.name for p in (tmp_path / "u/vnnlib").iterdir())
    assert files == ["uniform_00000.vnnlib"]
    back = read_vnnlib(tmp_path / "u/vnnlib/uniform_00000.vnnlib")
    from ctxbudget.data import get_dataset

    x = get_dataset("mnist-sample", "test").images[:1]
    lo, hi = input_box(x, torch.full_like(x, 0.3))
    assert np.array_equal(back["lower"], lo.reshape(-1).numpy()) and np.array_equal(back["upper"], hi.reshape(-1).numpy())


def _abcrown_cfg(out):
    import yaml

    return yaml.safe_load((out / "abcrown.yaml").read_text())


@pytest.mark.parametrize("cuda", [False, True])
def test_abcrown_yaml_states_the_exporting_machines_device(tiny_run_dir, tmp_path, monkeypatch, cuda):
    """alpha,beta-CROWN defaults to general.device cuda, which fails on a CPU-only machine."""
    from ctxbudget.data import get_dataset
    from ctxbudget.run import load_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    run = load_run(tiny_run_dir)
    ds = get_dataset("mnist-sample", "test")
    out = tmp_path / "v"
    manifest = export_vnnlib(run, ds.images[:1], ds.labels[:1], out, kinds=("uniform",), write_model=False)
    expected = "cuda" if cuda else "cpu"
    assert _abcrown_cfg(out)["general"]["device"] == expected and manifest["abcrown_device"] == expected
    comment = [line for line in (out / "abcrown.yaml").read_text().splitlines() if line.startswith("# general.device")]
    assert comment and ("has a CUDA GPU" if cuda else "has no CUDA GPU") in comment[0]


def test_abcrown_device_override_and_bad_value(tiny_run_dir, tmp_path, capsys):
    pytest.importorskip("onnx")
    from ctxbudget.data import get_dataset
    from ctxbudget.errors import UserError
    from ctxbudget.run import load_run

    default = "cuda" if torch.cuda.is_available() else "cpu"
    other = "cpu" if default == "cuda" else "cuda"
    out = tmp_path / "v"
    argv = ["export", str(tiny_run_dir), "--format", "vnnlib", "--limit", "1", "--out", str(out)]
    assert main([*argv, "--abcrown-device", other]) == 0
    assert _abcrown_cfg(out)["general"]["device"] == other
    assert "--abcrown-device" in (out / "abcrown.yaml").read_text()
    assert f"general.device: {other}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--abcrown-device", "tpu"])
    assert exc.value.code == 2
    run = load_run(tiny_run_dir)
    ds = get_dataset("mnist-sample", "test")
    with pytest.raises(UserError, match="abcrown_device"):
        export_vnnlib(run, ds.images[:1], ds.labels[:1], tmp_path / "w", abcrown_device="gpu", write_model=False)


def test_manifest_holds_ctxbudgets_verdicts(untrained_run, tmp_path):
    """Per instance: certify's verdict under IBP and CROWN-IBP, the smallest margin lower bound of each
    and the best of them; checked against certify run here on the same boxes."""
    from ctxbudget.bounds.verify import certify
    from ctxbudget.budgets import UniformBudget
    from ctxbudget.data import get_dataset
    from ctxbudget.run import load_run

    run = load_run(untrained_run(tmp_path / "run", 0.0005))
    x = get_dataset("mnist-sample", "test").images[:8]
    with torch.no_grad():
        pred = run.classifier(x).argmax(1)
    y = pred.clone()
    y[:2] = (pred[:2] + 1) % 10                      # two misclassified examples, the others correct
    manifest = export_vnnlib(run, x, y, tmp_path / "v", kinds=("learned", "uniform"), write_model=False)
    on_disk = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert on_disk["examples"] == manifest["examples"] and on_disk["verdict_methods"] == ["ibp", "crown-ibp"]
    with torch.no_grad():
        boxes = {"learned": input_box(x, run.budgets(x)), "uniform": input_box(x, UniformBudget(0.0005)(x))}
    seen = set()
    for kind, (lo, hi) in boxes.items():
        ref = {m: certify(run.classifier, lo, hi, y, m, x=x) for m in ("ibp", "crown-ibp")}
        for n, ex in enumerate(manifest["examples"]):
            v = ex["ctxbudget"][kind]
            assert ex["prediction"] == int(pred[n])
            assert v["certified_by"] == [m for m in ref if bool(ref[m].verified[n])]
            for m in ref:
                assert v["min_margin_lower"][m] == pytest.approx(float(ref[m].min_lower[n]), rel=1e-9, abs=1e-12)
            assert v["best_min_margin_lower"] == max(v["min_margin_lower"].values())
            expected = "misclassified" if n < 2 else ("certified" if v["certified_by"] else "not certified")
            assert v["verdict"] == expected
            seen.add(v["verdict"])
            if n < 2:
                assert v["best_min_margin_lower"] < 0      # a misclassified example has a negative margin
    assert seen == {"certified", "not certified", "misclassified"}
