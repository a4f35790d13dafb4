import pytest
import torch

from fedbcs_lightning.evaluation.checkpoints import load_model
from tests.helpers import last


def test_load_model_rebuilds_fedbcs_with_the_trained_weights(fedbcs_run):
    model, info = load_model(last(fedbcs_run))
    assert not model.training
    assert sorted(model.encoder_transforms) == ["1", "2", "3"]  # FSR after levels 2-4
    assert hasattr(model, "prototype_descriptors")
    trained = fedbcs_run.result.last_weights
    state = model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert (info.image_size, info.in_channels, info.num_classes) == (32, 3, 3)
    assert info.sites == ["site1", "site2"] and info.window is None and info.round == 1


def test_local_checkpoint_needs_a_site(local_run):
    with pytest.raises(ValueError, match=r"one model per site .*--site: site1, site2"):
        load_model(last(local_run))
    with pytest.raises(ValueError, match="no site 'site3'"):
        load_model(last(local_run), site="site3")
    model, info = load_model(last(local_run), site="site2")
    trained = local_run.result.last_weights
    assert info.site == "site2"
    assert all(torch.equal(v, trained[f"site2/{k}"]) for k, v in model.state_dict().items())
    other = load_model(last(local_run), site="site1")[0].state_dict()
    assert not all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_fedbn_checkpoint_gives_each_site_its_own_batchnorm(fedbn_run):
    with pytest.raises(ValueError, match=r"one model per site .*--site: site1, site2"):
        load_model(last(fedbn_run))
    one = load_model(last(fedbn_run), site="site1")[0].state_dict()
    two = load_model(last(fedbn_run), site="site2")[0].state_dict()
    stats = [k for k in one if k.endswith("running_mean")]
    convs = [k for k in one if k.endswith("conv.weight") or k == "head.weight"]
    assert stats and all(not torch.equal(one[k], two[k]) for k in stats)
    assert convs and all(torch.equal(one[k], two[k]) for k in convs)


def test_a_new_site_gets_the_mean_of_the_sites_local_layers(fedbn_run, local_run):
    one = load_model(last(fedbn_run), site="site1")[0].state_dict()
    two = load_model(last(fedbn_run), site="site2")[0].state_dict()
    new, info = load_model(last(fedbn_run), site="mean")
    state = new.state_dict()
    assert info.site == "mean" and state.keys() == one.keys()
    local = [k for k in one if not torch.equal(one[k], two[k])]  # BatchNorm tensors
    assert any(k.endswith("running_var") for k in local)
    for key, value in state.items():
        if key in local:
            assert torch.allclose(value, (one[key] + two[key]) / 2)
        else:
            assert torch.equal(value, one[key])
    with pytest.raises(ValueError, match=r"no site 'site3'; its sites: site1, site2, or 'mean'"):
        load_model(last(fedbn_run), site="site3")
    with pytest.raises(ValueError, match="whole model per site .* none for a site that no"):
        load_model(last(local_run), site="mean")


def test_damaged_or_foreign_checkpoints_name_the_file(fedbcs_run, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(last(fedbcs_run).read_bytes()[:4000])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": {}}, foreign)
    for path in (truncated, text, foreign):
        with pytest.raises(ValueError, match=str(path)):
            load_model(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    checkpoint = torch.load(last(fedbcs_run), weights_only=True)
    checkpoint["config"]["train"]["method"] = "fedavg"  # no FSR or descriptor layers
    mismatch = tmp_path / "mismatch.pt"
    torch.save(checkpoint, mismatch)
    with pytest.raises(ValueError, match="weights do not fit the 'unet' / 'fedavg' model"):
        load_model(mismatch)


def test_a_checkpoint_never_imports_the_modules_its_config_lists(fedbcs_run, tmp_path, monkeypatch):
    """A checkpoint is data: the modules of its ``run.imports`` are reported, never imported,
    not even from the folder it is loaded in (where Python would find a planted module)."""
    import sys

    planted = tmp_path / "planted_payload.py"
    flag = tmp_path / "ran"
    planted.write_text(f"open({str(flag)!r}, 'w').write('code ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("this", "planted_payload"):
        sys.modules.pop(module, None)
        checkpoint = torch.load(last(fedbcs_run), weights_only=True)
        checkpoint["config"]["run"]["imports"] = [module]
        path = tmp_path / f"{module}.pt"
        torch.save(checkpoint, path)
        model, info = load_model(path)  # built-in backbone and method: it loads
        assert info.config.run.imports == [module] and module not in sys.modules
        checkpoint["config"]["model"]["backbone"] = "their-net"
        torch.save(checkpoint, path)
        with pytest.raises(ValueError, match=rf"from module\(s\) {module}.*--import {module}"):
            load_model(path)
        assert module not in sys.modules
    assert not flag.exists()


def test_a_checkpoint_with_non_finite_weights_is_refused_with_its_name(fedbcs_run, tmp_path):
    checkpoint = torch.load(last(fedbcs_run), weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key].clone().fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=rf"{path}.*non-finite weights.*{key}"):
        load_model(path)
