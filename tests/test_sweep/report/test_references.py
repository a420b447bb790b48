"""The frames FID/KID compare against (`sweep.report.references`): the spec's reference set wins over the sweep's
own videos, and duplicated or failed references are errors or notes, never hidden."""

from pathlib import Path

import numpy as np
import pytest

from helpers.reports import TWO_VARIANTS
from helpers.sweeps import DIM, make_spec, run_fake, write_reference
from sweep.report import reference_frames, summarize, summary_notes
from sweep.results.store import Store
from sweep.results.tables import load


def test_reference_set_wins_and_duplicates_or_failures_are_never_hidden(tmp_path):
    spec = make_spec(tmp_path, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec)  # the sweep's own reference videos: 3 × 8 frames
    store = Store(spec.storage)
    own, what = reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    assert own.shape == (24, DIM) and "own reference videos: 3 videos, 24 frames" in what
    for i in range(5):
        write_reference(store, spec.name, f"set-k/d{i}", f"d{i}", np.ones((10, DIM)) * i, source="reference_set",
                        content=f"c{i}", reference_set="/data/davis")
    feats, what = reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    assert feats.shape == (50, DIM) and what == "reference set /data/davis: 5 videos, 50 frames"
    assert reference_frames(load(spec.storage, "references"), ["abl"], "inception-v3-compat")[0] is None
    write_reference(store, spec.name, "set-k/d5", "d5", np.ones((10, DIM)), source="reference_set", content="c1")
    with pytest.raises(ValueError, match="'d1' and 'd5' hold the same frames"):
        reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    (Path(spec.storage) / spec.name / "references" / "part-ref-set-k-d5.parquet").unlink()
    # a failed reference set: FID is omitted with the reason, never computed against the sweep's own videos
    write_reference(store, spec.name, "set-z", None, np.zeros((2, DIM)), source="reference_set",
                    created_at="2025-01-01T00:00:00+00:00", status="error", error="reference set: disk gone")
    summary = summarize(load(spec.storage), references=load(spec.storage, "references"), n_boot=0)
    assert set(summary["fid"].to_pylist()) == {None}
    assert any("reference set's features failed (reference set: disk gone)" in n for n in summary_notes(summary))
