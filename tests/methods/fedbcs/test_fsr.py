import pytest
import torch

from fedbcs_lightning.methods.fedbcs.fsr import (
    BandFrequencyStyleRecalibration,
    FrequencyStyleRecalibration,
)


def _pair(channels, seed):
    torch.manual_seed(seed)
    closed = FrequencyStyleRecalibration(channels, mode="closed")
    with torch.no_grad():  # arbitrary parameter values, not the initial ones
        closed.mix_logits.copy_(torch.randn(2) * 0.3)
        closed.weight.copy_(torch.randn(channels))
        closed.bias.copy_(torch.randn(channels))
    fft = FrequencyStyleRecalibration(channels, mode="fft")
    fft.load_state_dict(closed.state_dict())
    return closed, fft


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 7, 5), (3, 2, 16, 9), (2, 5, 1, 11)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fft_and_closed_form_agree_in_value_and_gradient(shape, seed):
    closed, fft = _pair(shape[1], seed)
    x = (torch.randn(shape) * 3 + 1.5).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    a, b = closed(x), fft(x2)
    scale = a.abs().max()
    assert (a - b).abs().max() <= 1e-4 * scale
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-4 * x.grad.abs().max())
    for p, q in zip(closed.parameters(), fft.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-4 * p.grad.abs().max().clamp(min=1e-6))


def test_initial_mix_is_half_and_half():
    layer = FrequencyStyleRecalibration(3)
    assert torch.allclose(layer.mixing_weights, torch.tensor([0.5, 0.5]))


def test_mix_extremes_give_instance_norm_or_identity():
    layer = FrequencyStyleRecalibration(2)
    x = torch.randn(2, 2, 6, 6) * 4 + 2
    with torch.no_grad():
        layer.mix_logits.copy_(torch.tensor([0.0, 10.0]))  # all own amplitude
    assert torch.allclose(layer(x), x, atol=1e-4)
    with torch.no_grad():
        layer.mix_logits.copy_(torch.tensor([10.0, 0.0]))  # all normalised amplitude
    out = layer(x)
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(2, 2), atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.ones(2, 2), atol=1e-3)


def test_band_variant_starts_as_plain_fsr_and_is_frequency_selective():
    torch.manual_seed(0)
    band = BandFrequencyStyleRecalibration(3, bands=4)
    plain = FrequencyStyleRecalibration(3)
    x = torch.randn(2, 3, 12, 10) * 2 + 1
    assert torch.allclose(band(x), plain(x), atol=1e-4)
    index = band.band_index(12, 10, x.device)
    assert set(index.unique().tolist()) == {0, 1, 2, 3} and index[0, 0] == 0
    with torch.no_grad():
        band.mix_logits[0] = torch.tensor([10.0, 0.0])  # de-style only the lowest band
    changed = band(x)
    assert not torch.allclose(changed, plain(x), atol=1e-3)
    # a single-band change cannot be written as the closed form with any one scalar mix
    lam_values = torch.linspace(0, 1, 21)
    closed = [(lam * torch.nn.functional.instance_norm(x) + (1 - lam) * x) for lam in lam_values]
    assert min((changed - c).abs().max() for c in closed) > 1e-2
    changed.sum().backward()
    assert band.mix_logits.grad[0].abs().sum() > 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'closed' or 'fft'"):
        FrequencyStyleRecalibration(3, mode="wavelet")


def test_closed_form_keeps_only_its_input_and_per_channel_statistics_for_backward():
    """The closed form is one scale and shift of ``x`` per sample and channel: backward
    needs ``x`` and (N, C) statistics, no full-size intermediate (as IN(x) or the mix)."""
    layer = FrequencyStyleRecalibration(4)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    full_size = []

    def pack(t):
        if t.numel() >= x.numel() and t.untyped_storage().data_ptr() != x.data_ptr():
            full_size.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    assert full_size == []
    out.square().sum().backward()
    assert x.grad is not None and layer.mix_logits.grad.abs().sum() > 0
