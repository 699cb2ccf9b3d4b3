from __future__ import annotations

import numpy as np
from ase.build import bulk

from pfd.perturb import perturb


def test_reproducible_and_bounded() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    a = perturb([si], 5, 0.1, 0.03, "uniform", seed=7)
    b = perturb([si], 5, 0.1, 0.03, "uniform", seed=7)
    c = perturb([si], 5, 0.1, 0.03, "uniform", seed=8)
    assert len(a) == 6  # original + 5
    np.testing.assert_allclose(a[0].positions, si.positions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
    assert not np.allclose(a[3].positions, c[3].positions)
    for p in a[1:]:
        strain = np.linalg.solve(si.cell.array, p.cell.array) - np.eye(3)
        assert np.abs(strain).max() <= 0.03 + 1e-12
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)  # symmetric strain
        assert not np.allclose(p.cell.array, si.cell.array)
        # displacement from the strained ideal positions, minimum image
        ideal = si.get_scaled_positions() @ p.cell.array
        d = p.positions - ideal
        frac = np.linalg.solve(p.cell.array.T, d.T).T
        d = (frac - np.round(frac)) @ p.cell.array
        assert np.linalg.norm(d, axis=1).max() <= 0.1 + 1e-9
        assert np.linalg.norm(d, axis=1).max() > 0.0


def test_const_style_and_no_original() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    out = perturb([si], 2, 0.2, 0.0, "const", seed=1, include_unperturbed=False)
    assert len(out) == 2
    for p in out:
        disp = p.positions - si.positions
        frac = np.linalg.solve(si.cell.array.T, disp.T).T
        disp = (frac - np.round(frac)) @ si.cell.array
        np.testing.assert_allclose(np.linalg.norm(disp, axis=1), 0.2, rtol=1e-9)
