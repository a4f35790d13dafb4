import torch

from fedbcs_lightning.methods.prototypes import (
    PrototypeAccumulator,
    PrototypeBank,
    aggregate_prototypes,
)


def test_batch_mean_and_pixel_mean_match_brute_force():
    torch.manual_seed(0)
    batches = [(torch.randn(n, 3), torch.randint(0, 2, (n,))) for n in (5, 20, 9)]
    by_batch, by_pixel = PrototypeAccumulator("batch"), PrototypeAccumulator("pixel")
    for feats, labels in batches:
        sums = torch.stack([feats[labels == c].sum(0) for c in range(2)])
        counts = torch.stack([(labels == c).sum() for c in range(2)]).float()
        by_batch.add("enc", sums, counts)
        by_pixel.add("enc", sums, counts)
    for c in range(2):
        batch_means = [f[lab == c].mean(0) for f, lab in batches if (lab == c).any()]
        expected = torch.stack(batch_means).mean(0)
        assert torch.allclose(by_batch.bank().centroids("enc", c)[0], expected, atol=1e-6)
        every = torch.cat([f[lab == c] for f, lab in batches])
        assert torch.allclose(by_pixel.bank().centroids("enc", c)[0], every.mean(0), atol=1e-6)


def test_absent_class_is_not_invented():
    acc = PrototypeAccumulator()
    acc.add("dec", torch.ones(3, 2), torch.tensor([4.0, 0.0, 2.0]))
    assert acc.bank().classes("dec") == [0, 2]


def test_single_client_class_passes_through_unchanged():
    a = PrototypeBank(
        {("enc", 0): torch.tensor([[1.0, 2.0]]), ("enc", 1): torch.tensor([[3.0, 4.0]])}
    )
    b = PrototypeBank({("enc", 0): torch.tensor([[5.0, 6.0]])})
    merged, clusters = aggregate_prototypes([a, b])
    assert torch.equal(merged.centroids("enc", 1), torch.tensor([[3.0, 4.0]]))
    assert clusters == {"enc/0": 1, "enc/1": 1}
    assert torch.allclose(merged.unbiased("enc", 0), torch.tensor([3.0, 4.0]))


def test_finch_keeps_distinct_styles_as_separate_centroids():
    directions = [[1, 0.02], [1, 0.0], [1, -0.02], [0.02, 1], [0.0, 1], [-0.02, 1]]
    banks = [PrototypeBank({("enc", 1): torch.tensor([d])}) for d in directions]
    merged, clusters = aggregate_prototypes(banks, clustering="finch")
    assert clusters["enc/1"] == 2
    centroids = merged.centroids("enc", 1)
    expected = {(1.0, 0.0), (0.0, 1.0)}  # the member means of the two direction groups
    assert {tuple(round(v, 6) for v in c.tolist()) for c in centroids} == expected
    mean_merged, mean_clusters = aggregate_prototypes(banks, clustering="mean")
    assert mean_clusters["enc/1"] == 1 and mean_merged.centroids("enc", 1).shape == (1, 2)


def test_dict_round_trip():
    bank = PrototypeBank({("encoder", 2): torch.randn(3, 4), ("decoder", 0): torch.randn(1, 4)})
    again = PrototypeBank.from_dict(bank.to_dict())
    assert again.vectors.keys() == bank.vectors.keys()
    assert all(torch.equal(again.vectors[k], bank.vectors[k]) for k in bank.vectors)
