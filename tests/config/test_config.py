import pytest
import yaml

from fedbcs_lightning.config import Config, ConfigError, from_dict, merge, parse_override, resolve


def test_defaults_validate():
    cfg = resolve()
    assert cfg.data.name == "synthetic" and cfg.train.method == "fedavg"
    assert cfg.model.encoder_weights is None


def test_precedence_preset_then_overrides_then_options(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  rounds: 7\n  lr: 0.5\ndata:\n  image_size: 48\n")
    cfg = resolve(preset, overrides=["train.lr=0.25"], options={"data": {"image_size": 32}})
    assert (cfg.train.rounds, cfg.train.lr, cfg.data.image_size) == (7, 0.25, 32)


def test_builtin_preset_by_name():
    assert resolve("smoke").data.image_size == 32


@pytest.mark.parametrize(
    "updates, message",
    [
        (
            {"train": {"roundz": 3}},
            "unknown config key 'train.roundz'.*Did you mean 'train.rounds'",
        ),
        ({"train": {"rounds": "many"}}, "train.rounds: expected an integer"),
        ({"train": {"rounds": 0}}, "train.rounds: must be positive"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer: 'rmsprop' is not one of"),
        (
            {"data": {"name": "nope"}},
            "data.name: unknown data set 'nope'; valid data sets: .*synthetic",
        ),
        ({"train": {"method": "fedmagic"}}, "train.method: unknown method"),
        ({"data": {"val_fraction": 0.7}}, "data.val_fraction: must lie in"),
        ({"data": {"augment": "maybe"}}, "data.augment: expected true or false"),
        ({"nope": {}}, "unknown config key 'nope'"),
        ({"data": {"folds": 1}}, "data.folds: 0 .* or at least 2, got 1"),
        ({"data": {"intensity": "zscore"}}, "data.intensity: 'zscore' is not one of unit"),
        ({"data": {"augmentation": "elastic"}}, "data.augmentation: 'elastic' is not one of"),
        ({"data": {"volume_clip": [99, 1]}}, "data.volume_clip: two percentiles"),
        ({"data": {"eval_batch_size": -1}}, "data.eval_batch_size: must be >= 0"),
        ({"data": {"folds": 5, "fold": 5}}, r"data.fold: must lie in 0..4 with data.folds=5"),
        ({"data": {"fold": 1}}, r"data.fold: must lie in 0..0 with data.folds=0"),
    ],
)
def test_bad_values_name_the_key(updates, message):
    with pytest.raises(ConfigError, match=message):
        resolve(options=updates)


def test_override_parsing_types_values():
    assert parse_override("data.synthetic.sites=3") == {"data": {"synthetic": {"sites": 3}}}
    cfg = resolve(overrides=["model.encoder_weights=null", "data.augment=false"])
    assert cfg.model.encoder_weights is None and cfg.data.augment is False
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("rounds")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(bad)
    with pytest.raises(ConfigError, match="neither a file nor a preset; presets: .*smoke"):
        resolve("no-such-preset")


def test_round_trip_through_yaml():
    cfg = merge(Config(), {"train": {"rounds": 4, "clients": 2}})
    again = from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_paper_presets_keep_the_reference_behaviour():
    nuclei, prostate = resolve("paper-nuclei"), resolve("paper-prostate")
    assert (nuclei.train.optimizer, nuclei.train.lr, nuclei.fedbcs.tau) == ("sgd", 0.01, 0.005)
    assert (prostate.train.optimizer, prostate.train.lr, prostate.fedbcs.tau) == ("adam", 1e-4, 0.4)
    for cfg in (nuclei, prostate):
        assert cfg.train.batch_size == 6 and cfg.train.rounds == 400 and cfg.train.local_epochs == 1
        assert cfg.model.norm == "batch_stateless" and cfg.fedbcs.alignment == "paper"
        assert cfg.train.shuffle is False and cfg.data.eval_batch_size == 16
        assert cfg.fedbcs.fsr and cfg.fedbcs.cdpa  # the paper's whole method
    assert nuclei.data.resize_whole and nuclei.data.intensity == "minmax"
    assert not nuclei.data.augment
    assert (prostate.data.augmentation, prostate.data.intensity) == ("rot90_flip", "raw")
    assert prostate.data.eval_foreground_only and not prostate.data.edge_slices
    assert prostate.data.volume_clip == [0, 99] and prostate.data.case_dice is False
    default = resolve("fedbcs")
    assert default.fedbcs.alignment == "stable" and default.train.shuffle is True
    assert default.fedbcs.fsr and not default.fedbcs.cdpa  # chosen on validation (README)


def test_fedbcs_section_is_validated():
    with pytest.raises(ConfigError, match="fedbcs.fsr_mode: 'wavelet' is not one of"):
        resolve(options={"fedbcs": {"fsr_mode": "wavelet"}})
    with pytest.raises(ConfigError, match="fedbcs.prototype_levels: 'middle' is not one of"):
        resolve(overrides=["fedbcs.prototype_levels=[encoder, middle]"])
    cfg = resolve(overrides=["fedbcs.fsr_levels=[3,4]"])
    assert cfg.fedbcs.fsr_levels == [3, 4]


def test_a_config_saved_before_method_options_registered_themselves_still_loads():
    """Run folders of earlier versions hold every built-in method's section."""
    from fedbcs_lightning.config import Config, from_dict

    old = Config().to_dict()
    old.update(
        fedbcs={"fsr": True, "cdpa": True, "fsr_levels": [3, 4], "tau": 0.2},
        fedprox={"mu": 0.05},
        moon={"mu": 1.0, "tau": 0.5, "projection_dim": 64},
        fpl={"tau": 0.02, "weight": 1.0, "max_anchors": 1024},
        harmofl={"alpha": 0.05, "momentum": 0.1},
    )
    old["train"]["method"] = "fedbcs"
    config = from_dict(old)
    assert config.fedbcs.cdpa and config.fedbcs.fsr_levels == [3, 4]
    assert config.fedprox.mu == 0.05 and config.method_options("harmofl").alpha == 0.05
    assert from_dict(config.to_dict()) == config


def test_a_data_set_brings_its_defaults_under_every_layer_the_user_sets(tmp_path):
    from fedbcs_lightning.config import resolve

    fundus = resolve(options={"data": {"name": "fundus"}})
    assert (fundus.data.image_size, fundus.train.rounds) == (128, 20)
    assert resolve(options={"data": {"name": "synthetic"}}).data.image_size == 64
    mine = resolve(overrides=["data.name=fundus", "data.image_size=256"], options={})
    assert (mine.data.image_size, mine.train.rounds) == (256, 20)
    preset = tmp_path / "mine.yaml"
    preset.write_text("data:\n  name: fundus\ntrain:\n  rounds: 5\n")
    assert resolve(preset, options={"train": {"rounds": 7}}).train.rounds == 7
    assert resolve(preset).train.rounds == 5
    assert resolve(preset).data.image_size == 128
