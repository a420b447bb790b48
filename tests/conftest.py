"""Test environment (offline hub, a per-session model cache, Ray on loopback, few threads) and the fixtures several
test modules share. Shared builders that are not fixtures live in `tests/helpers/`."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # a missing weight fails at once instead of trying the network
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray binds 127.0.0.1
os.environ.setdefault("MOTION_SWEEP_CACHE", os.path.join(tempfile.gettempdir(), "motion-sweep-test-cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_pipe():
    from model import load_pipeline

    return load_pipeline("tiny", device="cpu")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium under Playwright (tests/helpers/browser.py): skipped outside CI when missing, failed in CI."""
    from helpers.browser import launched_browser

    with launched_browser() as b:
        yield b


@pytest.fixture
def reference_set(tmp_path):
    """A folder of real-looking reference videos for FID (three textured shapes moving three ways) and a file that
    is not a video."""
    import videoio

    folder = tmp_path / "davis"
    folder.mkdir()
    for i, direction in enumerate([(1, 0), (0, 1), (-1, 0)]):
        videoio.write_video(folder / f"clip{i}.mp4", videoio.moving_shape_video(6, 64, 64, direction=direction,
                                                                                  texture_seed=i))
    (folder / "notes.txt").write_text("ignored")
    return folder
