import math

import pytest
import torch
import torch.nn.functional as F

from fedbcs_lightning.methods.fedbcs.alignment import alignment_loss
from fedbcs_lightning.methods.prototypes import PrototypeBank

BG, FG = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])


def _bank():
    return PrototypeBank({("enc", 0): BG[None], ("enc", 1): torch.stack([FG, FG * 0.9])})


def test_near_zero_on_own_prototype_and_larger_on_the_other_class():
    labels = torch.ones(4, dtype=torch.long)
    on = alignment_loss(FG.repeat(4, 1) * 0.95, labels, _bank(), "enc", tau=0.1)
    off = alignment_loss(BG.repeat(4, 1), labels, _bank(), "enc", tau=0.1)
    assert on < 0.01 and off > 5


@pytest.mark.parametrize("tau", [0.005, 0.4])
def test_stable_mode_is_finite_with_gradient_at_cosines_one_and_minus_one(tau):
    feats = torch.stack([FG, -FG, BG, -BG]).requires_grad_(True)
    loss = alignment_loss(feats, torch.ones(4, dtype=torch.long), _bank(), "enc", tau=tau)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_stable_mode_keeps_contrastive_gradient_where_paper_mode_saturates():
    torch.manual_seed(0)
    feats = (FG + 0.3 * torch.randn(16, 3)).requires_grad_(True)
    labels = torch.ones(16, dtype=torch.long)
    bank = PrototypeBank({("enc", 0): (FG + BG)[None] / 2, ("enc", 1): FG[None]})  # cos ~ 0.7

    def contrastive_grad(mode):
        feats.grad = None
        loss = alignment_loss(feats, labels, bank, "enc", tau=0.005, mode=mode)
        consis = ((feats - FG) ** 2).mean(1).mean()
        (loss - consis).backward()  # keep only the contrastive part
        return feats.grad.abs().sum()

    assert contrastive_grad("stable") > 1e-3
    assert contrastive_grad("paper") == 0  # every exponential clamped at 1e6


def test_matches_a_direct_computation():
    torch.manual_seed(1)
    feats, labels = torch.randn(10, 3), torch.tensor([1, 1, 1, 2, 2, 0, 0, 1, 2, 2])
    bank = PrototypeBank({("e", c): torch.randn(c + 1, 3) for c in range(3)})
    tau = 0.3
    per_class = []
    for c in (1, 2):  # anchors are foreground (label != 0)
        f = feats[labels == c]
        sims = {
            k: F.cosine_similarity(f[:, None], bank.centroids("e", k)[None], dim=2) / tau
            for k in range(3)
        }
        pos = sims[c].exp().sum(1)
        total = sum(s.exp().sum(1) for s in sims.values())
        contra = -(pos / total).log()
        consis = ((f - bank.unbiased("e", c)) ** 2).mean(1)
        per_class.append((contra + consis).mean())
    expected = torch.stack(per_class).mean()
    fg = labels != 0
    got = alignment_loss(feats[fg], labels[fg], bank, "e", tau=tau)
    assert torch.allclose(got, expected, atol=1e-5)
    paper = alignment_loss(feats[fg], labels[fg], bank, "e", tau=tau, mode="paper")
    assert torch.allclose(paper, expected, atol=1e-5)  # no clamp is reached at tau 0.3


def test_classes_without_prototypes_are_skipped():
    bank = PrototypeBank({("enc", 0): BG[None]})
    loss = alignment_loss(FG[None], torch.tensor([1]), bank, "enc", tau=0.1)
    assert loss == 0


def test_paper_mode_stays_finite_when_every_positive_similarity_underflows():
    """The reference adds 1e-9 to both sums: an anchor opposite its class's prototype at
    tau 0.005 (exp(-200) = 0) gives a large finite loss, not inf with NaN gradients."""
    bank = PrototypeBank(
        {("enc", 0): torch.tensor([[1.0, 0.0]]), ("enc", 1): torch.tensor([[-1.0, 0.0]])}
    )
    features = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = alignment_loss(features, torch.tensor([1]), bank, "enc", tau=0.005, mode="paper")
    loss.backward()
    # contrastive (the positive underflows to 0, the negative is clamped at 1e6) + the mean
    # squared distance to the unbiased prototype (-1, 0)
    expected = -math.log(1e-9 / (1e6 + 1e-9)) + 2.0
    assert math.isfinite(loss.item()) and abs(loss.item() - expected) < 1e-3 * expected
    assert torch.isfinite(features.grad).all()
