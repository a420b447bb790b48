"""The method's transfer check (`toyworld.transfer`) on the shipped toy world: its plumbing, with a few steps.
The paired 12-reference test of the method itself is test_world.py's."""

from __future__ import annotations

import numpy as np
import pytest

from toyworld.transfer import transfer_check


def test_the_builds_transfer_check_pairs_method_and_base_per_reference(toy_pipe, scorer):
    """The build log's small positive control (`transfer_check`, 4 references at a build's end): references
    on both axes and a diagonal, one method and one base number per reference, and the count of wins is theirs.
    Here with 3 inversion, 3 denoising and 2 DDIM inversion steps (plumbing); what it measures on the shipped world
    is in toyworld/NOTES.md."""
    got = transfer_check(toy_pipe, scorer, n=4, inversion=dict(steps=3), generation=dict(steps=3), ddim_steps=2)
    assert got["n"] == 4 and got["motions"] == ["right", "down", "down_right", "left"]
    method, base = np.array(got["method_per_reference"]), np.array(got["base_per_reference"])
    assert method.shape == base.shape == (4,) and (np.abs([*method, *base]) <= 1 + 1e-6).all()
    assert got["method_higher"] == int((method > base).sum())
    assert got["method"] == pytest.approx(method.mean()) and got["base"] == pytest.approx(base.mean())
