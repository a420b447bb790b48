"""Tables at lab scale: one pyarrow.dataset scan over parts and compacted files, and `compact` that readers
never see half-done (killed at any point, the table reads the same), with rewritten parts replacing their rows."""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pytest

from sweep.results import parts
from sweep.results.store import Store
from sweep.results.tables import compact, load, write_part


def row(i: int, status: str = "ok", **extra) -> dict:
    return {"sample_key": f"k{i:04d}", "status": status, "motion_fidelity": i / 100, "prompt": f"p{i}", **extra}


def snapshot(path) -> list[tuple]:
    t = load(path)
    return sorted(zip(t["sweep"].to_pylist(), t["sample_key"].to_pylist(), t["status"].to_pylist(),
                      t["motion_fidelity"].to_pylist()))


def files(path, sweep="s", table="samples") -> list[str]:
    return sorted(os.listdir(os.path.join(path, sweep, table)))


@pytest.fixture
def sweep_dir(tmp_path):
    for i in range(12):
        write_part(tmp_path, "s", f"t{i}", [row(i), row(100 + i)])
    return tmp_path


def test_compact_keeps_every_row_once_and_leaves_one_file(sweep_dir):
    before = snapshot(sweep_dir)
    assert len(before) == 24
    assert compact(sweep_dir, min_age_s=0) == {"s": {"samples": 12}}
    assert snapshot(sweep_dir) == before
    names = files(sweep_dir)
    assert len(names) == 1 and names[0].startswith("compact-")
    assert compact(sweep_dir, min_age_s=0) == {}  # nothing new: nothing done
    assert "_part" not in load(sweep_dir).column_names


def test_a_part_rewritten_after_compaction_replaces_its_rows(sweep_dir):
    compact(sweep_dir, min_age_s=0)
    write_part(sweep_dir, "s", "t3", [row(3, "error")])  # e.g. --retry-errors rewrote the trial's part
    write_part(sweep_dir, "s", "t99", [row(99)])
    expected = [r for r in snapshot(sweep_dir)]
    keys = [k for _, k, _, _ in expected]
    assert "k0103" not in keys and "k0099" in keys
    assert [r[2] for r in expected if r[1] == "k0003"] == ["error"]  # the new row only
    assert len(expected) == 24 - 2 + 1 + 1
    compact(sweep_dir, min_age_s=0)  # the second compaction absorbs the first
    assert snapshot(sweep_dir) == expected and len(files(sweep_dir)) == 1


def test_young_parts_wait_for_the_next_compaction(sweep_dir):
    before = snapshot(sweep_dir)
    assert compact(sweep_dir, min_age_s=3600) == {}
    assert snapshot(sweep_dir) == before and len(files(sweep_dir)) == 12


@pytest.mark.parametrize("deletes_before_kill", [0, 5, 12, 13])
def test_a_compaction_killed_midway_leaves_the_table_reading_the_same(sweep_dir, monkeypatch, deletes_before_kill):
    """Killed after writing the compacted file and `deletes_before_kill` deletions (of the absorbed parts, and
    in the second compaction of the absorbed compacted file), then compacted again to the end."""
    write_part(sweep_dir, "s", "extra", [row(500)])
    compact(sweep_dir, min_age_s=0, sweeps=["s"])
    write_part(sweep_dir, "s", "t1", [row(1, "error")])
    for i in range(12, 24):
        write_part(sweep_dir, "s", f"t{i}", [row(i)])
    before = snapshot(sweep_dir)
    real = Store.delete
    calls = []

    def dying(self, rel):
        if len(calls) >= deletes_before_kill:
            raise KeyboardInterrupt("killed")
        calls.append(rel)
        real(self, rel)

    monkeypatch.setattr(Store, "delete", dying)
    with pytest.raises(KeyboardInterrupt):
        compact(sweep_dir, min_age_s=0)
    monkeypatch.setattr(Store, "delete", real)
    assert snapshot(sweep_dir) == before  # mid-way: two compacted files and some parts, the same rows
    compact(sweep_dir, min_age_s=0)
    assert snapshot(sweep_dir) == before and len(files(sweep_dir)) == 1


def test_a_compaction_killed_while_writing_leaves_only_a_temp_file_that_no_reader_sees(sweep_dir, monkeypatch):
    before = snapshot(sweep_dir)

    def torn(self, rel, data):
        target = os.path.join(self.uri, rel)
        with open(os.path.join(os.path.dirname(target), ".tmp-" + os.path.basename(target)), "wb") as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Store, "write_bytes_atomic", torn)
    with pytest.raises(KeyboardInterrupt):
        compact(sweep_dir, min_age_s=0)
    monkeypatch.undo()
    assert snapshot(sweep_dir) == before and any(n.startswith(".tmp-") for n in files(sweep_dir))


def test_a_reader_whose_listing_went_stale_lists_again(sweep_dir, monkeypatch):
    """A reader lists, a compaction deletes the parts, the reader's scan misses a file: it lists again."""
    before = snapshot(sweep_dir)
    real_state = parts.table_state
    stale = real_state(Store(str(sweep_dir / "s")), "samples")
    calls = []

    def state(store, table, dead=None):
        calls.append(table)
        if len(calls) == 1:
            monkeypatch.setattr(parts, "table_state", real_state)
            compact(sweep_dir, min_age_s=0)  # meanwhile the parts went into a compacted file
            monkeypatch.setattr(parts, "table_state", state)
            return stale
        return real_state(store, table, dead)

    monkeypatch.setattr(parts, "table_state", state)
    assert snapshot(sweep_dir) == before and len(calls) >= 2


def test_parts_with_different_columns_unify_in_one_scan(tmp_path):
    write_part(tmp_path, "s", "a", [row(1, **{"inversion.lr_applied": 0.01})])
    write_part(tmp_path, "s", "b", [row(2, **{"noise_prior_applied": 0.5})])
    write_part(tmp_path, "s", "c", [row(3)])
    t = load(tmp_path)
    assert t.num_rows == 3
    by_key = {r["sample_key"]: r for r in t.to_pylist()}
    assert by_key["k0001"]["inversion.lr_applied"] == 0.01 and by_key["k0002"]["inversion.lr_applied"] is None
    assert by_key["k0002"]["noise_prior_applied"] == 0.5
    assert t.schema.field("motion_fidelity").type == pa.float64()


def test_a_torn_part_is_skipped_with_a_warning_and_strict_raises(sweep_dir):
    (sweep_dir / "s" / "samples" / "part-torn.parquet").write_bytes(b"PAR1 not really")
    with pytest.warns(UserWarning, match="part-torn"):
        assert len(snapshot(sweep_dir)) == 24
    with pytest.raises((pa.ArrowInvalid, OSError)):
        load(sweep_dir, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((pa.ArrowInvalid, OSError)):
            compact(sweep_dir, min_age_s=0)  # never absorbs (and deletes around) a file it cannot read
    assert len(files(sweep_dir)) == 13


def test_a_storage_root_with_several_sweeps_and_the_cli(sweep_dir, capsys):
    from sweep.cli import main

    write_part(sweep_dir, "other", "x", [row(7)])
    before = snapshot(sweep_dir)
    assert main(["compact", str(sweep_dir), "--min-age", "0"]) == 0
    out = capsys.readouterr().out
    assert "s: samples 12 files" in out and "other: samples 1 file" in out
    assert snapshot(sweep_dir) == before
