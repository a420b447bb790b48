"""README's demo table (`benchmarks/fig_toy_demo.py`, a script, loaded from its file): error rows stay visible."""

from __future__ import annotations

from helpers import REPO


def test_demo_figure_table_keeps_error_rows_visible_and_out_of_the_statistics():
    import importlib.util

    path = REPO / "benchmarks" / "fig_toy_demo.py"
    spec = importlib.util.spec_from_file_location("fig_toy_demo", path)
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    columns = {
        "variant": ["qk=1d v=2d debias=difference", "qk=1d v=2d debias=difference", "qk=1d v=off", "qk=1d v=off"],
        "video": ["square-right", "triangle-up-left", "square-right", "triangle-up-left"],
        "motion_fidelity": [0.79, -0.27, None, -0.94],
        "text_similarity": [0.9, 0.7, None, 0.8],
        "status": ["ok", "ok", "error", "ok"]}
    samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
    lines = fig.table(samples).splitlines()
    assert lines[0] == "| variant | square-right | triangle-up-left |"
    assert "| qk=1d v=2d debias=difference | +0.79 | -0.27 |" in lines
    assert "| qk=1d v=off | error | -0.94 |" in lines
    assert lines[-1] == "text similarity (toy CLIP) 0.70–0.90; n = 4 samples, 3 ok"
