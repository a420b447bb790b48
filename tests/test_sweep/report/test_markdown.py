"""summary.md (`sweep.report.markdown`): the Table 1 layout's best marks and significance marks, the first line
naming random-weight metric backbones, and the comparisons' methods and design limit (on the HTML page too)."""

from pathlib import Path

import pyarrow as pa
from markupsafe import escape

from helpers.reports import TWO_VARIANTS
from helpers.sweeps import make_spec, run_fake
from helpers.reports import page_html
from sweep.report import best_rows, paper_table, report
from sweep.report.stats import PAIRED_CI_METHOD, TEST
from sweep.results.schemas import COMPARISONS_SCHEMA


def test_best_marks_respect_each_metrics_direction():
    assert best_rows([0.2, 0.1, None], "fid") == {1}
    assert best_rows([0.2, 0.1, None], "appearance_leakage") == {1}
    assert best_rows([0.2, 0.1, 0.2], "text_similarity") == {0, 2}  # ties all count
    assert best_rows([None], "kid") == set()
    summary = pa.table({"variant": ["a", "b"], "checkpoint_step_applied": [20, 20],
                        "text_similarity_mean": [0.31, 0.29], "motion_fidelity_mean": [0.9, 0.95],
                        "fid": [600.0, 550.0], "fid_reliable": [True, False]})
    comparisons = pa.Table.from_pylist([
        {"sweep": "s", "baseline": "a", "variant": "b", "metric": "motion_fidelity", "checkpoint": 20, "p": 0.001,
         "p_holm": 0.004},
        {"sweep": "s", "baseline": "a", "variant": "b", "metric": "text_similarity", "checkpoint": 20, "p": 0.02,
         "p_holm": 0.04}], schema=COMPARISONS_SCHEMA)
    lines, legend = paper_table(summary, comparisons)
    assert [c.strip() for c in lines[0].split("|")[3:6]] == ["Text similarity ↑", "Motion fidelity ↑", "FID ↓"]
    a, b = (line.split("|")[1:-1] for line in lines[2:])
    assert a[0].strip() == "a (baseline)" and a[2].strip() == "**0.3100**" and a[4].strip() == "600.00"
    assert b[2].strip() == r"0.2900\*" and b[3].strip() == r"**0.9500**\*\*" and b[4].strip() == "**550.00†**"
    assert any("†" in x for x in legend) and any("no votes" in x for x in legend)
    lines, legend = paper_table(summary.append_column("user_preference", pa.array([0.35, 0.65])), comparisons)
    assert lines[0].split("|")[-2].strip() == "User preference ↑" and lines[3].split("|")[-2].strip() == "**0.6500**"
    assert not any("no votes" in x for x in legend) and any("Bradley–Terry probability" in x for x in legend)
    _, legend = paper_table(summary.append_column("user_preference", pa.array([None, None], pa.float64())))
    assert any("unconnected groups" in x for x in legend)  # votes without a common scale (preference.py)


def test_random_weight_backbones_are_named_in_the_first_line(tmp_path, capsys):
    spec = make_spec(tmp_path, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec)
    report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=0)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("# Summary: abl — RANDOM-WEIGHT METRIC BACKBONES") and "plumbing" in first
    assert (tmp_path / "out" / "summary.md").read_text().splitlines()[0] == first


def test_the_comparisons_say_their_methods_and_what_the_design_can_detect(tmp_path):
    """8 videos, 3 variants × 2 checkpoints against the paper's method: 6 comparisons per metric, so p_holm cannot go
    below 6 × 2/256 = 0.047 (summary.md and the HTML page say so under the comparisons)."""
    spec = make_spec(tmp_path, n_videos=8)
    run_fake(spec)
    report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=999, echo=False)
    text = (tmp_path / "out" / "summary.md").read_text()
    section = text[text.index("## Paired differences"):]
    limit = ("With 8 videos and 6 comparisons per metric, p_holm cannot go below 0.0469: ** (p_holm < 0.01) is out "
             "of reach, so a missing ** is the design's limit.")
    assert f"CI: 95% {PAIRED_CI_METHOD}. p: {TEST};" in section and limit in section
    page = page_html(tmp_path / "out")
    assert escape(limit) in page and escape(PAIRED_CI_METHOD) in page
