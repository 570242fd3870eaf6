"""companion.clustering: k-means finds separated groups, is seeded and checks its input; purity."""

import pytest
import torch

from companion.clustering import cluster_purity, kmeans


def separated_groups(n=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, 1, 6, 6, generator=g) * torch.tensor([1.0, 4.0, 8.0])[:, None, None, None]
    truth = torch.arange(n) % 3
    return centres[truth] + 0.05 * torch.randn(n, 1, 6, 6, generator=g), truth


def test_kmeans_recovers_separated_groups_of_images_and_is_seeded():
    images, truth = separated_groups()
    ids = kmeans(images, 3, seed=1)
    assert ids.shape == (90,) and ids.dtype == torch.long
    assert cluster_purity(ids, truth) == 1.0 and cluster_purity(truth, ids) == 1.0  # a bijection of groups
    assert torch.equal(ids, kmeans(images, 3, seed=1))


def test_kmeans_lowers_the_within_cluster_sum_of_squares_below_a_random_partition():
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(2))

    def within(ids):
        return sum(float(((x[ids == j] - x[ids == j].mean(0)) ** 2).sum()) for j in range(4) if (ids == j).any())

    random_ids = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(3))
    assert within(kmeans(x, 4, seed=0)) < 0.8 * within(random_ids)


def test_cluster_purity_counts_the_commonest_label_of_each_cluster():
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([5, 5, 7, 1, 2, 3])
    assert cluster_purity(ids, labels) == pytest.approx(4 / 6)  # 2 of cluster 0, 1 of cluster 1, 1 of cluster 2
    one_cluster = torch.zeros(6, dtype=torch.long)
    assert cluster_purity(one_cluster, labels) == pytest.approx(2 / 6)  # the largest class
    with pytest.raises(ValueError, match=r"both have shape \(N,\)"):
        cluster_purity(ids, labels[:5])


def test_kmeans_rejects_bad_k_and_iterations():
    images, _ = separated_groups()
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 90\]"):
        kmeans(images, 91)
    with pytest.raises(ValueError, match=r"k must be an int"):
        kmeans(images, True)
    with pytest.raises(ValueError, match="iterations must be an int >= 1"):
        kmeans(images, 3, iterations=0)


def test_cluster_shares_are_the_clusters_fractions_of_the_data_and_reject_bad_ids():
    from companion.clustering import cluster_shares

    shares = cluster_shares(torch.tensor([0, 2, 2, 2, 0, 3]), 5)
    torch.testing.assert_close(shares, torch.tensor([2, 0, 3, 1, 0]) / 6)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        cluster_shares(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        cluster_shares(torch.zeros(2, 2, dtype=torch.long), 3)
