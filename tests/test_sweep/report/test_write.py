"""`report()` (`sweep.report.write`): summary.md, summary.csv and the comparisons table written, and the report's
import path loads no plotting library (the page's modules load when a page is written)."""

import subprocess
import sys
from pathlib import Path

from helpers import REPO
from helpers.sweeps import make_spec, run_fake
from sweep.report import report
from sweep.results.tables import load
from sweep.run.plan import BASE_VARIANT


def test_report_writes_markdown_and_csv(tmp_path, capsys):
    spec = make_spec(tmp_path)
    run_fake(spec)
    out = tmp_path / "report"
    summary = report(Path(spec.storage) / spec.name, out, baseline=BASE_VARIANT, n_boot=50)
    printed = capsys.readouterr().out
    assert "qk=1d v=off" in printed and "text_similarity" in printed
    md = (out / "summary.md").read_text()
    assert md.startswith("# Summary") and "| variant " in md and "| step " in md
    csv_text = (out / "summary.csv").read_text().splitlines()
    assert csv_text[0].startswith("variant,checkpoint_step_applied,n_samples")
    assert len(csv_text) == summary.num_rows + 1
    comparisons = load(Path(spec.storage) / spec.name, table="comparisons")
    assert comparisons.num_rows > 0 and set(comparisons["baseline"].to_pylist()) == {BASE_VARIANT}


def test_the_report_path_imports_no_plotting_library():
    code = ("import sys, sweep.report, sweep.cli, sweep.results.tables; "
            "bad = [m for m in ('matplotlib', 'jinja2', 'PIL', 'sweep.report.html') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
