import pytest

from ctxbudget.config import RunConfig, config_from_dict, dump_config, load_config, parse_overrides
from ctxbudget.errors import UserError
from ctxbudget.presets import configs_dir

CONFIGS = sorted(configs_dir().glob("*.yaml"))


def test_defaults_valid_and_roundtrip(tmp_path):
    cfg = RunConfig().validate()
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.budget.kind in ("learned", "uniform")


def test_paper_experiments_have_configs():
    names = {p.stem for p in CONFIGS}
    for required in ["quickstart", "quickstart-uniform", "mnist-learned-0.4", "mnist-uniform-0.4",
                     "mnist-learned-0.6", "mnist-learned-0.8", "cifar10-learned-8", "cifar10-uniform-8",
                     "cifar10-learned-32", "cifar10-uniform-32", "watermarked-mnist-learned-0.3",
                     "watermarked-mnist-uniform-0.3", "doubled-cifar10-learned-16", "doubled-cifar10-uniform-16",
                     "organamnist-learned-16", "organamnist-uniform-16", "cifar10-jpeg-learned-8",
                     "cifar10-jpeg-uniform-8", "cifar10-jpeg-learned-32", "cifar10-jpeg-uniform-32",
                     "doubled-cifar10-jpeg-learned-16", "doubled-cifar10-jpeg-uniform-16"]:
        assert required in names


def test_overrides_parse_types():
    cfg = load_config(None, ["optim.lr=1e-3", "budget.kind=uniform", "optim.lr_milestones=[3, 4]",
                             "data.train_limit=100", "optim.grad_clip=null"])
    assert cfg.optim.lr == 1e-3 and cfg.budget.kind == "uniform" and cfg.optim.lr_milestones == [3, 4]
    assert cfg.data.train_limit == 100 and cfg.optim.grad_clip is None


@pytest.mark.parametrize("data,match", [
    ({"optim": {"lrr": 1}}, "unknown config key.*optim.lrr"),
    ({"bogus": {}}, "unknown config key"),
    ({"budget": {"eps0": 0}}, "eps0"),
    ({"budget": {"eps0": 1.2}}, "eps0"),
    ({"budget": {"alpha_lo": 0.9, "alpha_hi": 0.95}}, "alpha_hi"),
    ({"budget": {"alpha_lo": 1.5}}, "alpha_lo"),
    ({"optim": {"epochs": "ten"}}, "integer"),
    ({"loss": {"method": "crown"}}, "loss.method"),
    ({"schedule": {"kind": "cosine"}}, "schedule.kind"),
    ({"data": {"name": "image-folder"}}, "data.path is required"),
    ({"data": {"path": "x.tar.gz"}}, "data.path is read only with data.name image-folder"),
    ({"data": {"name": "cifar10-jpeg", "classes": ["a", "b"]}}, "data.classes is read only"),
    ({"data": {"name": "image-folder", "path": "x", "classes": ["a"]}}, "at least 2"),
    ({"data": {"name": "image-folder", "path": "x", "classes": "a,b"}}, "list of names"),
])
def test_bad_configs_rejected(data, match):
    with pytest.raises(UserError, match=match):
        config_from_dict(data)


def test_image_folder_keys():
    cfg = load_config(None, ["data.name=image-folder", "data.path=imgs.zip", "data.classes=[cat, 0, dog]"])
    assert cfg.data.path == "imgs.zip" and cfg.data.classes == ["cat", "0", "dog"]    # YAML's 0 read as a name


def test_bad_override_syntax():
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])


def test_inert_keys_name_what_a_run_never_reads():
    from ctxbudget.config import load_config

    assert load_config(None, ["budget.kind=uniform"]).inert_keys() >= {("budget", "generator"),
                                                                       ("budget", "generator_padding"),
                                                                       ("budget", "generator_resolution")}
    assert load_config(None, ["budget.generator=dense"]).inert_keys() == {("budget", "generator_padding"),
                                                                          ("budget", "generator_resolution"),
                                                                          ("budget", "generator_mix"),
                                                                          ("budget", "generator_mix_range")}
    assert load_config(None, ["budget.generator=context"]).inert_keys() == {("budget", "generator_mix"),
                                                                            ("budget", "generator_mix_range")}
    assert load_config(None, ["budget.generator=mix"]).inert_keys() == set()


def test_generator_resolution_is_checked():
    from ctxbudget.config import load_config

    assert load_config(None, ["budget.generator_resolution=half"]).budget.generator_resolution == "half"
    with pytest.raises(UserError, match="budget.generator_resolution must be one of full, half"):
        load_config(None, ["budget.generator_resolution=quarter"])
