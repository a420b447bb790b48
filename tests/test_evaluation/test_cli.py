"""evaluation/cli.py: `motion-sweep score` prints every metric and the backbones, and refuses bad input."""

import json

import videoio
from evaluation.cli import main as cli_main
from vocabulary import SAMPLE_METRICS as METRICS


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_prints_metrics_and_backbones(tmp_path, clips, capsys):
    ref, gen = clips
    r = videoio.write_video(tmp_path / "ref.mp4", ref)
    g = videoio.write_video(tmp_path / "gen.mp4", gen[:6, :48])  # other length and size
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "a green circle",
                     "--json", "--min-motion", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in METRICS:
        assert isinstance(out[k], float)
    assert out["clip_backbone"] == "ViT-S-32/random-seed0" and out["pretrained_metrics"] is False
    assert out["fid_features_shape"] == [6, 384] and out["generated_shape"] == "6x48x64"  # every frame
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "a green circle"]) == 0
    text = capsys.readouterr().out
    assert "motion_fidelity_two_way" in text and "random weights" in text and "plumbing" in text
    terms = ", ".join(f"{name} {'n/a' if out[f'motion_{name}'] is None else format(out[f'motion_{name}'], '.4f')}"
                      for name in ("camera", "objects"))
    lines = text.splitlines()  # the motion score's terms, under it, as --json gives them
    assert lines[lines.index(next(x for x in lines if x.startswith("motion_fidelity "))) + 1].endswith(terms)
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", " "]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "x",
                     "--clip", "ViT-Q-99"]) == 2
    assert "unknown CLIP backbone" in capsys.readouterr().err
