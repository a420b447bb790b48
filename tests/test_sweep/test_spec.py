"""The sweep spec: parsing, defaults, path resolution, and one error listing every problem."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO
from sweep.spec import Spec, SpecError, load_spec

EXAMPLE = """\
name: paper-ablation
preset: zeroscope
storage: ./results
data:
  - video: videos/car-turn.mp4
    source_prompt: "a car turns around in a city street"
    prompts: ["a tank rolls through the desert", "a toy train circles a tree"]
axes:
  qk: [1d, 2d]
  v: [2d, 1d]
  remove: [none, qk, v]
  debias: [difference, normalize, none]
  seed: [0]
  inversion.lr: [0.01, 0.02]
inversion: {steps: 400, lr: 0.02, loss: base, checkpoints: [250, 400], frames: 24}
generation: {steps: 30, guidance: 12.0, noise_prior: 0.5}
metrics: {clip: ViT-B-32/laion2b_s34b_b79k, tracker: cotracker3}
resources: {gpu: 1, cpu: 8}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "car-turn.mp4").write_bytes(b"car")
    (tmp_path / "videos" / "dog.gif").write_bytes(b"dog")
    frames = tmp_path / "videos" / "frames"
    frames.mkdir()
    (frames / "0000.png").write_bytes(b"png")
    return tmp_path


def test_issue_example_loads_with_paths_relative_to_the_spec(project: Path, monkeypatch):
    monkeypatch.chdir("/")  # the cwd must not matter
    spec = load_spec(write(project / "paper.yaml", EXAMPLE))
    assert spec.name == "paper-ablation" and spec.preset == "zeroscope"
    assert spec.storage == str(project / "results")
    item = spec.data[0]
    assert item.video == str(project / "videos" / "car-turn.mp4")
    assert item.id == "car-turn"
    assert spec.axes.qk == ["1d", "2d"] and spec.axes.remove == ["none", "qk", "v"]
    assert spec.axis_values()["inversion.lr"] == [0.01, 0.02]
    assert spec.inversion.checkpoints == [250, 400] and spec.inversion.frames == 24
    assert spec.resources.gpu == 1.0 and spec.resources.cpu == 8.0
    assert spec.base_model == "cerspense/zeroscope_v2_576w"


def test_defaults(project: Path):
    spec = Spec.model_validate({"name": "t", "preset": "tiny", "data": [
        {"video": str(project / "videos" / "dog.gif"), "source_prompt": "a dog", "prompts": ["a cat"]}]})
    assert spec.axis_values() == {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["difference"],
                                  "seed": [0]}
    # preset defaults are filled in, so keys and plan.json carry concrete values
    assert (spec.inversion.frames, spec.inversion.height, spec.inversion.width) == (8, 64, 64)
    assert spec.generation.fps == 8
    assert (spec.metrics.clip, spec.metrics.tracker) == ("ViT-S-32", "lk")
    assert spec.resources.gpu == 0.0 and spec.resources.cpu == 1.0
    assert spec.checkpoints_for(400) == [250, 400] and spec.checkpoints_for(100) == [100]  # the paper's step 250
    assert spec.data[0].id == "dog"


def test_every_problem_is_listed_at_once(project: Path):
    bad = textwrap.dedent("""\
        name: paper
        preset: zeroscope
        colour: blue
        data:
          - video: videos/car-turn.mp4
            source_prompt: a car
            prompts: [a tank]
          - video: videos/missing.mp4
            source_prompt: a boat
            prompts: []
        axes:
          qk: [1d, 3d]
          debias: [difference, sharpen]
          inversion.lrate: [0.1]
          generation.guidance: [7.5, 12]
        inversion: {steps: 400, optimizer: adam}
        """)
    with pytest.raises(SpecError) as info:
        load_spec(write(project / "bad.yaml", bad))
    err = info.value
    text = str(err)
    missing = str(project / "videos" / "missing.mp4")
    assert "data[1].video" in text and missing in text and "videos/missing.mp4" in text
    expected = {
        "colour": "unknown key",
        "data[1].prompts": "at least one prompt",
        "axes.qk[1]": "'3d' is not accepted",
        "axes.debias[1]": "'sharpen' is not accepted",
        "axes.inversion.lrate": "unknown key",
        "inversion.optimizer": "unknown key",
    }
    for where, what in expected.items():
        assert any(p.startswith(where) and what in p for p in err.problems), (where, err.problems)
    assert len(err.problems) == 7
    assert "accepted: '1d' or '2d'" in text  # says what is accepted
    assert "difference" in text and "drop" in text
    assert isinstance(err, ValueError)
    assert "bad.yaml" in text


def test_missing_video_only(project: Path):
    raw = {"name": "x", "preset": "tiny", "data": [
        {"video": "videos/car-turn.mp4", "source_prompt": "a", "prompts": ["b"]},
        {"video": "videos/nope.mp4", "source_prompt": "a", "prompts": ["b"]}]}
    with pytest.raises(SpecError) as info:
        Spec.model_validate(raw, context={"base_dir": str(project)})
    assert info.value.problems == [
        f"data[1].video: video not found: {project / 'videos' / 'nope.mp4'} (given as 'videos/nope.mp4')"]
    # the cluster path can skip the file checks
    spec = Spec.model_validate(raw, context={"base_dir": str(project), "check_files": False})
    assert spec.data[1].video == str(project / "videos" / "nope.mp4")


def test_frame_folders_and_non_videos(project: Path):
    (project / "empty").mkdir()
    (project / "notes.txt").write_text("x")
    raw = {"name": "x", "preset": "tiny", "data": [
        {"video": "videos/frames", "source_prompt": "a", "prompts": ["b"]},
        {"video": "empty", "source_prompt": "a", "prompts": ["b"]},
        {"video": "notes.txt", "source_prompt": "a", "prompts": ["b"]}]}
    with pytest.raises(SpecError) as info:
        Spec.model_validate(raw, context={"base_dir": str(project)})
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("data[1].video") and "holds no frames" in problems[0]
    assert problems[1].startswith("data[2].video") and "not a video file" in problems[1]
    raw["data"] = raw["data"][:1]
    assert Spec.model_validate(raw, context={"base_dir": str(project)}).data[0].id == "frames"


def test_jsonl_and_csv_manifests(project: Path):
    data = project / "data"
    data.mkdir()
    (data / "clip.mp4").write_bytes(b"clip")
    lines = [{"video": "clip.mp4", "source_prompt": "a clip", "prompts": ["p1", "p2"]},
             {"video": str(project / "videos" / "dog.gif"), "source_prompt": "a dog", "prompts": ["p3"], "id": "doggo"}]
    (data / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    spec = load_spec(write(project / "a.yaml", "name: a\npreset: tiny\ndata: data/m.jsonl\n"))
    # relative videos in a manifest resolve against the manifest's folder
    assert [d.video for d in spec.data] == [str(data / "clip.mp4"), str(project / "videos" / "dog.gif")]
    assert [d.id for d in spec.data] == ["clip", "doggo"]
    assert spec.data[0].prompts == ["p1", "p2"]

    (data / "m.csv").write_text('video,source_prompt,prompts\nclip.mp4,a clip,"p1 | p2"\nlost.mp4,x,p\n')
    with pytest.raises(SpecError) as info:
        load_spec(write(project / "b.yaml", "name: b\npreset: tiny\ndata: data/m.csv\n"))
    (problem,) = info.value.problems
    assert problem.startswith("data[1].video (manifest m.csv item 2)") and "lost.mp4" in problem
    (data / "m.csv").write_text('video,source_prompt,prompts\nclip.mp4,a clip,"p1 | p2"\n')
    spec = load_spec(project / "b.yaml")
    assert spec.data[0].prompts == ["p1", "p2"]


def test_bad_manifest(project: Path):
    (project / "m.jsonl").write_text('{"video": "videos/dog.gif"\n')
    with pytest.raises(SpecError, match="m.jsonl line 1: not JSON"):
        load_spec(write(project / "a.yaml", "name: a\npreset: tiny\ndata: m.jsonl\n"))
    with pytest.raises(SpecError, match="manifest not found"):
        load_spec(write(project / "b.yaml", "name: a\npreset: tiny\ndata: nothere.csv\n"))


def test_hyperparameter_axes(project: Path):
    base = {"name": "x", "preset": "tiny", "data": [
        {"video": "videos/dog.gif", "source_prompt": "a", "prompts": ["b"]}]}
    ctx = {"base_dir": str(project)}
    spec = Spec.model_validate({**base, "axes": {"inversion.lr": [0.01, 0.02], "generation": {"guidance": [7.5]},
                                                  "generation.noise_init": ["blend", "random"]}}, context=ctx)
    assert spec.axes.hyper() == {"inversion.lr": [0.01, 0.02], "generation.guidance": [7.5],
                                 "generation.noise_init": ["blend", "random"]}
    with pytest.raises(SpecError) as info:
        Spec.model_validate({**base, "axes": {"inversion.lr": [-1], "inversion.checkpoints": [[1]],
                                              "generation.foo": [1], "generation.noise_init": ["zero"],
                                              "mqk": ["1d"], "seed": 0, "v": []}}, context=ctx)
    problems = info.value.problems
    assert len(problems) == 7, problems
    assert any(p.startswith("axes.inversion.lr[0]") and "greater than 0" in p for p in problems)
    assert any(p.startswith("axes.inversion.checkpoints") and "cannot be an axis" in p for p in problems)
    assert any(p.startswith("axes.generation.foo") and "guidance" in p for p in problems)
    assert any(p.startswith("axes.generation.noise_init[0]") and "'blend' or 'random'" in p for p in problems)
    assert any(p.startswith("axes.mqk") and "inversion.<name>" in p for p in problems)
    assert any(p.startswith("axes.seed") and "valid list" in p for p in problems)
    assert any(p.startswith("axes.v") and "at least one value" in p for p in problems)


def test_yaml_off_is_a_boolean_and_gets_a_hint(project: Path):
    spec_file = write(project / "a.yaml", "name: a\npreset: tiny\ndata:\n  - {video: videos/dog.gif, "
                                          "source_prompt: a, prompts: [b]}\naxes: {qk: [off], remove: [none, none]}\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec_file)
    assert any("False is not accepted" in p and "remove" in p for p in info.value.problems)
    assert any(p.startswith("axes.remove") and "duplicate" in p for p in info.value.problems)


def test_cross_field_checks(project: Path):
    base = {"name": "x", "preset": "tiny", "data": [
        {"video": "videos/dog.gif", "source_prompt": "a", "prompts": ["b"]},
        {"video": "videos/frames", "source_prompt": "a", "prompts": ["b"], "id": "dog"}]}
    ctx = {"base_dir": str(project)}
    with pytest.raises(SpecError) as info:
        Spec.model_validate({**base, "inversion": {"steps": 300, "checkpoints": [250, 400], "frames": 40}},
                            context=ctx)
    text = str(info.value)
    assert "data[1].id" in text and "'dog'" in text
    assert "[400] exceed steps=300" in text
    assert "40 frames do not fit in slots=32" in text
    # with a steps axis every value needs a checkpoint at or below it
    with pytest.raises(SpecError, match="none of \\[250, 400\\] is <= steps=200"):
        Spec.model_validate({**base, "data": base["data"][:1], "inversion": {"checkpoints": [250, 400]},
                             "axes": {"inversion.steps": [200, 400]}}, context=ctx)


def test_names_presets_and_storage(project: Path):
    base = {"data": [{"video": "videos/dog.gif", "source_prompt": "a", "prompts": ["b"]}]}
    ctx = {"base_dir": str(project)}
    with pytest.raises(SpecError) as info:
        Spec.model_validate({**base, "name": "bad name/x", "preset": "sora", "storage": "ftp://host/x"}, context=ctx)
    problems = info.value.problems
    assert len(problems) == 3
    assert any(p.startswith("preset") and "zeroscope, modelscope, videocrafter2, tiny" in p for p in problems)
    assert any(p.startswith("storage") and "s3://" in p for p in problems)
    with pytest.raises(SpecError, match="reserved"):
        Spec.model_validate({**base, "name": "store", "preset": "tiny"}, context=ctx)
    with pytest.raises(SpecError, match="name: required field is missing"):
        Spec.model_validate({**base, "preset": "tiny"}, context=ctx)
    spec = Spec.model_validate({**base, "name": "x", "preset": "tiny", "storage": "s3://bucket/prefix"}, context=ctx)
    assert spec.storage == "s3://bucket/prefix"


def test_unreadable_spec_files(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path / "a.yaml", "name: [unclosed\n"))
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path / "b.yaml", "- a\n- b\n"))


def test_spec_round_trips_through_its_dump(project: Path):
    spec = load_spec(write(project / "paper.yaml", EXAMPLE))
    again = Spec.model_validate(spec.model_dump(mode="json"), context={"check_files": False})
    assert again == spec


def test_no_heavy_imports():
    code = ("import sys, vocabulary, sweep, sweep.spec, sweep.plan, sweep.store, sweep.tables, sweep.report, "
            "sweep.cli; sweep.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'ray', 'diffusers', 'open_clip') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_fps_is_a_setting_not_an_axis(tmp_path):
    """The written file's frame rate changes no generated frame or metric, so it cannot be swept."""
    base = {"name": "s", "preset": "tiny", "data": [{"video": "v.mp4", "source_prompt": "a", "prompts": ["b"]}]}
    ctx = {"check_files": False}
    assert Spec.model_validate({**base, "generation": {"fps": 24}}, context=ctx).generation.fps == 24
    with pytest.raises(SpecError, match="generation.fps cannot be an axis"):
        Spec.model_validate({**base, "axes": {"generation.fps": [8, 24]}}, context=ctx)

def test_spec_reference_set_and_fid_frames(reference_set, tmp_path):
    base = {"name": "s", "preset": "tiny", "data": [{"video": "v.mp4", "source_prompt": "a", "prompts": ["b"]}]}
    ctx = {"check_files": False, "base_dir": str(tmp_path)}
    spec = Spec.model_validate({**base, "reference_set": "davis", "metrics": {"fid_frames": 4}}, context=ctx)
    assert spec.reference_set == str(reference_set) and spec.metrics.fid_frames == 4
    assert Spec.model_validate(base, context=ctx).metrics.fid_frames == 0  # every frame
    with pytest.raises(SpecError, match="reference set not found"):
        Spec.model_validate({**base, "reference_set": "nowhere"}, context={"base_dir": str(tmp_path)})
    with pytest.raises(SpecError, match="not a URI"):
        Spec.model_validate({**base, "reference_set": "s3://bucket/davis"}, context=ctx)
    with pytest.raises(SpecError, match="fid_frames"):
        Spec.model_validate({**base, "metrics": {"fid_frames": -1}}, context=ctx)
