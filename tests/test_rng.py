"""Counter-based random numbers: uniform, independent across streams, pure in their inputs."""

from __future__ import annotations

import numpy as np

from keyboard_sim import rng


def test_record_key_is_stable_and_seed_dependent():
    assert rng.record_key(0, "a") == rng.record_key(0, "a")
    assert rng.record_key(0, "a") != rng.record_key(1, "a")
    assert rng.record_key(0, "a") != rng.record_key(0, "b")


def test_uniforms_moments_and_independence():
    keys = np.full(200_000, rng.record_key(5, "x"), dtype=np.uint64)
    pos = np.arange(200_000)
    a, b, c = rng.uniforms3(keys, pos, 1)
    d, _, _ = rng.uniforms3(keys, pos, 2)
    for u in (a, b, c, d):
        assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
        assert u.min() >= 0 and u.max() < 1
    for u, v in ((a, b), (a, c), (a, d)):
        assert abs(np.corrcoef(u, v)[0, 1]) < 0.01


def test_normals_moments():
    keys = np.full(200_000, 123, dtype=np.uint64)
    x, y, _ = rng.normals2(keys, np.arange(200_000), 3)
    for z in (x, y):
        assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
        # Kurtosis of a normal is 3.
        assert abs(((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3) < 0.1


def test_draws_are_pure_functions_of_inputs():
    keys = np.array([1, 2, 3], dtype=np.uint64)
    pos = np.array([0, 5, 9])
    a1 = rng.uniforms3(keys, pos, 1)[0]
    a2 = rng.uniforms3(keys[::-1], pos[::-1], 1)[0]
    assert (a1 == a2[::-1]).all()
