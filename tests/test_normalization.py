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
