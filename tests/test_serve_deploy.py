"""The cluster path: `serve deploy` of the file `diffcxr serve --print-deploy-config` writes, on a real Ray head.

Deploys the app declaratively (the controller imports ``build_app`` with the ServeConfig as args), generates,
then deploys an edited config naming another bundle while clients keep sending requests: Serve rolls the
replicas, no request fails, and the responses move to the new version. ~2 min.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from diffcxr.config import load_config
from infra.local import free_port, start_ray_head, stop_ray_head

pytestmark = [pytest.mark.ray, pytest.mark.exclusive]  # `ray start` head, then `ray stop`
REPORT = "Small left pleural effusion."


def _serve_cli() -> str:
    return shutil.which("serve", path=str(Path(sys.executable).parent)) or "serve"


@pytest.fixture
def ray_head() -> Iterator[str]:
    stop_ray_head()
    address = start_ray_head(num_cpus=2)
    yield address
    subprocess.run([_serve_cli(), "shutdown", "-y", "--address", address], capture_output=True, timeout=120)
    stop_ray_head()


def _deploy(address: str, serve_yaml: Path, tmp: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "serve", "--config", str(serve_yaml), "--print-deploy-config"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    deploy = tmp / "deploy.yaml"
    deploy.write_text(printed.stdout)
    res = subprocess.run(
        [_serve_cli(), "deploy", str(deploy), "--address", address], capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_serve_deploy_then_an_edited_config_rolls_in_place_without_dropping_requests(
    ray_head: str, tmp_path: Path, roll_under_load: Callable[..., list[tuple[int, str]]]
) -> None:
    from services.diffusion.generator import build_initial_bundle
    from services.serve.models import resolve

    bundles = [build_initial_bundle(load_config("tiny", [f"project.seed={s}"]), tmp_path / f"b{s}") for s in (0, 1)]
    labels = [resolve(str(b)).label for b in bundles]
    port = free_port()
    config = {
        "model": str(bundles[0]), "http_port": port, "grpc_port": free_port(), "auth": {"mode": "off"},
        "limits": {"max_steps": 4}, "default_steps": 2,
        "text": {"num_cpus": 0.2}, "denoiser": {"num_cpus": 0.5, "threads": 1}, "decoder": {"num_cpus": 0.2},
    }  # fmt: skip
    serve_yaml = tmp_path / "serve.yaml"
    serve_yaml.write_text(yaml.safe_dump(config))
    _deploy(ray_head, serve_yaml, tmp_path)

    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if requests.get(url + "v1/health", timeout=5).json().get("status") == "ok":
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    first = requests.post(url + "v1/generate", json={"report": REPORT, "seed": 4}, timeout=120)
    assert first.status_code == 200, first.text
    assert first.json()["models"]["model"] == labels[0]

    def redeploy() -> None:
        serve_yaml.write_text(yaml.safe_dump({**config, "model": str(bundles[1])}))
        _deploy(ray_head, serve_yaml, tmp_path)

    def post() -> requests.Response:
        return requests.post(url + "v1/generate", json={"report": REPORT, "seed": 4}, timeout=120)

    results = roll_under_load(post, redeploy, labels[1], clients=2, timeout=180)
    assert results and all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    assert results[0][1] == labels[0] and results[-1][1] == labels[1]
    after = requests.post(url + "v1/generate", json={"report": REPORT, "seed": 4}, timeout=120).json()
    assert set(after["models"]["served_by"].values()) == {labels[1]}
    assert after["images"][0]["sha256"] != first.json()["images"][0]["sha256"]
