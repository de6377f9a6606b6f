import numpy as np
import pytest

from rl_trust.normalization import ObsNormalizer, RewardScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = RunningMeanStd((4,), epsilon=0.0)
    rms.count = 0.0
    rms.mean, rms.var = np.zeros(4), np.zeros(4)
    for chunk in np.array_split(data, 17):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-10)


def test_obs_normalizer_normalises_clips_freezes_and_round_trips():
    rng = np.random.default_rng(1)
    norm = ObsNormalizer((3,), clip=5.0)
    for _ in range(50):
        norm(rng.normal(10.0, 3.0, size=(8, 3)))
    out = norm.normalize(rng.normal(10.0, 3.0, size=(4000, 3)))
    assert abs(out.mean()) < 0.1 and abs(out.std() - 1) < 0.1
    assert np.abs(norm.normalize(np.full((1, 3), 1e6))).max() == 5.0
    norm.frozen = True
    before = norm.state_dict()
    norm(rng.normal(size=(8, 3)))
    np.testing.assert_array_equal(norm.state_dict()["rms"]["mean"], before["rms"]["mean"])
    other = ObsNormalizer((3,))
    other.load_state_dict(norm.state_dict())
    x = rng.normal(size=(5, 3))
    np.testing.assert_array_equal(other.normalize(x), norm.normalize(x))


def test_disabled_normalizers_are_identity():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_array_equal(ObsNormalizer((3,), enabled=False)(x), x.astype(np.float32))
    r = np.array([1.0, -2.0])
    np.testing.assert_array_equal(RewardScaler(2, 0.99, enabled=False)(r, np.zeros(2, bool)), r.astype(np.float32))


def test_reward_scaler_divides_by_std_of_discounted_return_and_resets_on_done():
    scaler = RewardScaler(1, gamma=0.5, clip=1e9)
    scaler(np.array([1.0]), np.array([False]))
    assert scaler.ret[0] == pytest.approx(1.0)
    scaler(np.array([1.0]), np.array([True]))
    assert scaler.ret[0] == 0.0  # reset after an episode ends
    rms = RunningMeanStd(())
    rms.update(np.array([1.0]))
    rms.update(np.array([1.5]))
    out = scaler(np.array([2.0]), np.array([False]))
    rms.update(np.array([2.0]))
    assert out[0] == pytest.approx(2.0 / np.sqrt(rms.var + 1e-8), rel=1e-6)


def _numpy_rms_update(mean, var, count, x):
    """The plain numpy formulas (Chan et al.), the reference for the in-place update."""
    batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
    delta = batch_mean - mean
    total = count + n
    m2 = var * count + batch_var * n + delta**2 * count * n / total
    return mean + delta * n / total, m2 / total, total


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_statistics_and_normalisation_match_the_plain_formulas(dtype):
    rng = np.random.default_rng(2)
    norm = ObsNormalizer((5,), clip=3.0)
    mean, var, count = np.zeros(5), np.ones(5), 1e-4
    for step in range(40):
        x = (rng.normal(4.0, 2.5, size=(7, 5)) * (1 + 10 * (step == 20))).astype(dtype)
        norm.update(x)
        mean, var, count = _numpy_rms_update(mean, var, count, x.astype(np.float64))
        np.testing.assert_allclose(norm.rms.mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(norm.rms.var, var, rtol=1e-12)
        assert norm.rms.count == count
        expected = np.clip((x - norm.rms.mean) / np.sqrt(norm.rms.var + 1e-8), -3.0, 3.0).astype(np.float32)
        np.testing.assert_array_equal(norm.normalize(x), expected)  # given the statistics: exact
        out = np.full((7, 5), np.nan, np.float32)
        assert norm.normalize(x, out=out) is out
        np.testing.assert_array_equal(out, expected)
    nan_row = np.array([[np.nan, 0, 0, 0, 0]])
    assert np.isnan(norm.normalize(nan_row)[0, 0])  # passes through as np.clip lets it


def test_reward_scaling_matches_the_plain_formulas_with_resets_and_freezing():
    rng = np.random.default_rng(3)
    scaler = RewardScaler(4, gamma=0.9, clip=2.0)
    ret, mean, var, count = np.zeros(4), np.zeros(()), np.ones(()), 1e-4
    for step in range(60):
        rewards = rng.normal(1.0, 3.0, size=4)
        dones = rng.random(4) < 0.1
        frozen = step >= 50
        scaler.frozen = frozen
        out = scaler(rewards, dones)
        if not frozen:
            ret = ret * 0.9 + rewards
            mean, var, count = _numpy_rms_update(mean, var, count, ret)
            ret[dones] = 0.0
        np.testing.assert_allclose(scaler.ret, ret, rtol=1e-12)
        np.testing.assert_allclose(scaler.rms.var, var, rtol=1e-12)
        expected = np.clip(rewards / np.sqrt(scaler.rms.var + 1e-8), -2.0, 2.0).astype(np.float32)
        np.testing.assert_array_equal(out, expected)
    assert scaler.rms.count == count


def test_statistics_set_from_outside_are_copied_not_aliased():
    rms = RunningMeanStd((3,))
    external = np.zeros(6)[::2]  # a strided view: updated in place it would be the caller's array
    rms.mean = external
    rms.update(np.ones((2, 3)))
    np.testing.assert_array_equal(external, 0.0)
    assert rms.mean[0] > 0.99
