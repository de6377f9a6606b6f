import pytest
import torch

from rl_trust.advantages import gae


def naive_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """One environment and one step at a time, straight from the definition."""
    T, N = rewards.shape
    adv = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                bootstrap = 0.0 if terminated[k, n] else next_values[k, n]
                delta = rewards[k, n] + gamma * bootstrap - values[k, n]
                total += discount * delta
                if terminated[k, n] or truncated[k, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_naive_loop_with_mixed_terminations_and_truncations(seed):
    g = torch.Generator().manual_seed(seed)
    T, N = 37, 5
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    next_values = torch.randn(T, N, generator=g, dtype=torch.float64)
    terminated = torch.rand(T, N, generator=g) < 0.1
    truncated = (torch.rand(T, N, generator=g) < 0.1) & ~terminated
    assert terminated.any() and truncated.any()
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma=0.97, lam=0.9)
    expected = naive_gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, adv + values)


def test_truncation_bootstraps_from_final_value_and_termination_does_not():
    rewards = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.5, 0.5]])
    next_values = torch.tensor([[10.0, 10.0]])
    adv, _ = gae(rewards, values, next_values, torch.tensor([[True, False]]), torch.tensor([[False, True]]),
                 gamma=0.9, lam=0.95)
    assert adv[0, 0].item() == pytest.approx(1.0 - 0.5)  # terminated: no bootstrap
    assert adv[0, 1].item() == pytest.approx(1.0 + 0.9 * 10.0 - 0.5)  # truncated: bootstrap


def test_trace_does_not_cross_episode_boundary():
    rewards = torch.tensor([[0.0], [100.0]])
    values = torch.zeros(2, 1)
    next_values = torch.zeros(2, 1)
    adv, _ = gae(rewards, values, next_values, torch.tensor([[False], [False]]), torch.tensor([[True], [False]]),
                 gamma=1.0, lam=1.0)
    assert adv[0, 0].item() == 0.0  # the reward after the boundary belongs to another episode


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="next_values"):
        z = torch.zeros(3, 2)
        gae(z, z, torch.zeros(3, 3), z.bool(), z.bool(), gamma=0.99, lam=0.95)
