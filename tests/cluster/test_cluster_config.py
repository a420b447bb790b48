"""cluster.yaml: valid for the installed Ray's own autoscaler schema, and shaped the way the README says.

`prepare_config` + `validate_config` are what `ray up` runs on a config before it talks to AWS (they fill
in Ray's AWS defaults and check the JSON schema); nothing here needs AWS credentials or the network.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import tomllib

import pytest
import yaml

from helpers import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
MOUNT = "~/motion-sweep"  # where the repository lands on every node


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(scope="module")
def pins() -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if re.match(r"ray\[.*\]==", d))
    python_min = re.match(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups()
    return {"ray": ray_pin.split("==", 1)[1], "python": tuple(int(x) for x in python_min)}


def _commands(config: dict, *keys: str) -> str:
    return "\n".join(c for k in keys for c in config.get(k) or [])


def _gpu_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items()
            if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1}


def test_valid_for_the_installed_rays_schema(prepared, pins):
    import ray

    assert ray.__version__ == pins["ray"], "validate against the Ray version the project pins"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_name"] == "motion-sweep"


def test_head_runs_no_trials(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    # no CPU, no GPU and no custom resource: no trial, DDIM task or worker-side check can be placed there
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert head["max_workers"] == 0 and head["min_workers"] == 0
    assert not re.match(r"^(g\d|p\d)", head["node_config"]["InstanceType"]), "the head is a CPU instance"


def test_autoscaling_gpu_worker_types(prepared):
    gpus = _gpu_types(prepared)
    a10g = gpus["gpu-a10g"]
    assert a10g["node_config"]["InstanceType"] == "g5.2xlarge" and a10g["resources"]["GPU"] == 1
    # the default worker (chosen from the cost model: tests/test_sweep/run/test_gpu_budget.py) scales from zero
    assert a10g["min_workers"] == 0 and a10g["max_workers"] >= 1
    a100 = gpus["gpu-a100-80gb"]
    assert a100["node_config"]["InstanceType"] == "p4de.24xlarge" and a100["resources"]["GPU"] == 8
    assert a100["min_workers"] == 0 and a100["max_workers"] == 0  # opt-in
    assert sum(t["max_workers"] for t in gpus.values()) >= 1
    assert prepared["max_workers"] >= max(t["max_workers"] for t in gpus.values())
    assert 0 < prepared["idle_timeout_minutes"] <= 60
    for name, t in gpus.items():
        cfg = t["node_config"]
        # workers reach s3:// storage through an instance role, never through keys copied to the node
        assert cfg.get("IamInstanceProfile"), name
        # an explicit AMI: Ray's built-in default is an old Deep Learning AMI whose driver is too old
        assert cfg.get("ImageId") and "nvidia" in cfg["ImageId"], name


def test_images_match_the_project_pins(prepared, pins):
    docker = prepared["docker"]
    py = "py{}{}".format(*pins["python"])
    assert docker["worker_image"] == f"rayproject/ray:{pins['ray']}-{py}-gpu"
    assert docker["head_image"] == f"rayproject/ray:{pins['ray']}-{py}-cpu"
    assert "nightly" not in docker["worker_image"] + docker["head_image"]


def test_setup_installs_this_project_never_a_nightly_ray(prepared, raw, pins):
    assert raw["file_mounts"][MOUNT] == "./build/motion-sweep"
    for key in ("head_setup_commands", "worker_setup_commands"):  # after Ray merged setup_commands in
        cmds = _commands(prepared, key)
        assert re.search(rf"pip install [^\n]*{re.escape(MOUNT)}(\s|$)", cmds), key
        assert f"ray.__version__ == '{pins['ray']}'" in cmds, key
        everything = cmds + _commands(prepared, "initialization_commands")
        for bad in ("ray-wheels", "nightly", "dev0", "latest/ray"):
            assert bad not in everything, (key, bad)
        assert not re.search(r"pip install[^\n]*\bray\b", everything), "the image's Ray is kept"


def test_dashboard_only_through_ray_dashboard(prepared):
    head_start = _commands(prepared, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    run_options = " ".join(prepared["docker"].get("run_options", []) + prepared["docker"].get("head_run_options", []))
    assert not re.search(r"(^|\s)(-p|--publish)\b", run_options), "no port published from the container"
    sg = prepared["provider"].get("security_group") or {}
    for perm in sg.get("IpPermissions", []):
        assert perm.get("FromPort") == perm.get("ToPort") == 22, "only SSH may be opened"


def test_model_cache_reaches_every_node(prepared, raw):
    run_options = prepared["docker"]["run_options"]
    env = dict(o[3:].split("=", 1) for o in run_options if o.startswith("-e "))
    assert env["HF_HOME"].startswith("/mnt/cache/") and env["TORCH_HOME"].startswith("/mnt/cache/")
    assert env["MOTION_SWEEP_CACHE"].startswith("/mnt/cache/")
    assert "MOTION_SWEEP_WEIGHTS" in env
    assert "-v /mnt/cache:/mnt/cache" in run_options
    assert "/mnt/cache" in _commands(prepared, "initialization_commands")
    assert "MOTION_SWEEP_WEIGHTS" in _commands(raw, "worker_setup_commands")  # the head loads no model
    assert "MOTION_SWEEP_WEIGHTS" not in _commands(raw, "setup_commands", "head_setup_commands")


def test_no_credentials_or_private_addresses_in_the_file():
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id|AKIA[0-9A-Z]{16}", text)
    for match in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text):
        addr = ipaddress.ip_address(match)
        assert addr.is_loopback or not addr.is_private, match


def _docker_env(config: dict) -> dict:
    return dict(o[3:].split("=", 1) for o in config["docker"]["run_options"] if o.startswith("-e "))


def test_token_auth_on_every_node_with_the_users_token(prepared, raw):
    """RAY_AUTH_MODE=token in every container (head and workers share run_options); the token itself comes
    from the user's ~/.ray/auth_token (outside the repository) through file_mounts, which the head forwards
    to the workers it starts; a node without it stops at setup with the command that makes one."""
    assert _docker_env(prepared)["RAY_AUTH_MODE"] == "token"
    for key in ("head_run_options", "worker_run_options"):
        assert "RAY_AUTH_MODE" not in " ".join(prepared["docker"].get(key, [])), "one setting for all nodes"
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not (REPO / ".ray").exists() and "auth_token" not in (REPO / ".gitignore").read_text()
    setup = _commands(raw, "setup_commands")
    assert "test -s ~/.ray/auth_token" in setup and "ray get-auth-token --generate" in setup
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]", text), "the token is never written into the config"


def test_ssh_only_from_the_users_group_never_the_internet(prepared):
    """cluster.yaml names the security group README makes (SSH from one address); Ray's AWS provider adds its
    default rules (SSH from 0.0.0.0/0) only to a group without rules, checked here with Ray's own function."""
    from ray.autoscaler._private.aws import config as aws_config

    sg = prepared["provider"]["security_group"]
    assert sg["GroupName"] == "motion-sweep-nodes" and not sg.get("IpPermissions")

    class Group:
        def __init__(self, rules):
            self.id, self.ip_permissions, self.added = "sg-1", rules, []

        def authorize_ingress(self, IpPermissions):
            self.added += IpPermissions

    users = Group([{"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}])
    aws_config._upsert_security_group_rules(prepared, {"head": users})
    assert users.added == []  # README's group is used as made
    fresh = Group([])  # what Ray would do with a group of its own making
    aws_config._upsert_security_group_rules(prepared, {"head": fresh})
    assert {"CidrIp": "0.0.0.0/0"} in [r for p in fresh.added for r in p.get("IpRanges", [])]
    readme = (REPO / "README.md").read_text()
    assert "--group-name motion-sweep-nodes" in readme and "checkip.amazonaws.com)/32" in readme


def test_head_role_is_ours_and_its_policy_is_written_out(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]["node_config"]
    assert head["IamInstanceProfile"] == {"Name": "motion-sweep-head"}  # not Ray's EC2/S3-full-access default
    readme = (REPO / "README.md").read_text()
    policy = re.search(r"cat > head-policy.json <<EOF\n(.*?)\nEOF", readme, re.S)
    assert policy, "README writes the head's policy out"
    text = policy.group(1)
    assert '"ec2:TerminateInstances"' in text and '"ec2:ResourceTag/ray-cluster-name": "motion-sweep"' in text
    assert "role/motion-sweep-worker" in text and "iam:PassRole" in text
    assert "FullAccess" not in text and '"Action": "*"' not in text and '"s3:*"' not in text


def test_job_upload_leaves_out_git_results_caches_and_environments(tmp_path):
    """What `ray job submit --working-dir .` uploads, computed by Ray's own packaging code: .rayignore and
    .gitignore drop .git, results, caches and virtual environments; the shipped toy weights stay in."""
    import shutil

    from ray._private.runtime_env import packaging

    work = tmp_path / "repo"
    own = shutil.ignore_patterns("*.pyc", ".git", ".venv", "venv", "results", "demo-results", "build", ".cache")
    shutil.copytree(REPO, work, ignore=own, symlinks=True, dirs_exist_ok=True)  # not this checkout's own environment
    for junk in (".git/objects/ab/cdef", ".venv/lib/site.py", "results/s/samples/part.parquet",
                 "demo-results/x.parquet", "build/motion-sweep/setup.py", ".cache/x", "venv/bin/python",
                 "tb/events.out.tfevents.1", "report/index.html"):
        (work / junk).parent.mkdir(parents=True, exist_ok=True)
        (work / junk).write_text("x")
    zipped = tmp_path / "pkg.zip"
    packaging.create_package(str(work), zipped, include_gitignore=True, include_parent_dir=False, excludes=[])
    import zipfile

    names = zipfile.ZipFile(zipped).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {".git", ".venv", "venv", "results", "demo-results", "build", ".cache", "tb", "report"} & tops == set()
    assert "cluster.yaml" in names and "sweep/run/runner.py" in names
    size = zipped.stat().st_size
    assert size < packaging.GCS_STORAGE_MAX_SIZE // 4, f"{size / 2**20:.1f} MiB; Ray's cap is 512 MiB"


def test_a_ray_client_driver_forwards_no_local_paths_and_no_credentials(monkeypatch):
    """`--address ray://…` runs the driver here and the trials there: the cluster's nodes set their own caches
    (HF_HOME, MOTION_SWEEP_CACHE under /mnt/cache); a path of this machine, or a key, must not travel."""
    import ray

    from sweep.run import preflight

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = {"HF_HOME": "/home/me/.cache/huggingface", "MOTION_SWEEP_CACHE": "/home/me/.cache/motion-sweep",
             "TORCH_HOME": "/home/me/.cache/torch", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ACCESS_KEY_ID": "AKIA",
             "HF_HUB_OFFLINE": "1", "AWS_ENDPOINT_URL": "https://s3.example.org", "AWS_REGION": "us-west-2"}
    for key, value in local.items():
        monkeypatch.setenv(key, value)
    preflight.init_ray("ray://head.example.org:10001")
    assert seen["address"] == "ray://head.example.org:10001"
    assert seen["runtime_env"]["env_vars"] == {"HF_HUB_OFFLINE": "1", "AWS_ENDPOINT_URL": "https://s3.example.org",
                                               "AWS_REGION": "us-west-2"}
