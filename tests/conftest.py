"""Real services for the tests: a moto S3 server and an MLflow server on 127.0.0.1.

``.ci/run`` starts both once and exports their URLs (DIFFCXR_TEST_S3_ENDPOINT,
DIFFCXR_TEST_MLFLOW_URI); a developer running pytest alone gets them started
here, once per session. Nothing ever talks to real AWS: the endpoint and dummy
credentials are set before any client exists.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from diffcxr.env import apply_defaults
from infra.local import start_mlflow, start_moto

apply_defaults()
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests choose their store explicitly
if "DIFFCXR_FOLDER_CACHE" not in os.environ:  # remote folders cached per test session, removed at exit
    os.environ["DIFFCXR_FOLDER_CACHE"] = tempfile.mkdtemp(prefix="diffcxr-test-folders-")
    atexit.register(shutil.rmtree, os.environ["DIFFCXR_FOLDER_CACHE"], True)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


#: Modules that take longest, in the order pytest-xdist should hand them out: a long module started last would
#: run alone at the end (infra/run_tests.sh). The others follow in their usual order.
LONGEST_FIRST = (
    "test_launch.py", "test_serve_deploy.py", "test_phantom_learnability.py", "test_eval.py", "test_diffusion.py",
    "test_text.py", "test_generation_alignment.py", "test_serving.py", "test_faults.py", "test_filter.py",
)  # fmt: skip


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


#: Modules that start no Ray process (checked by reading them: no cluster, Ray Data, Train or Serve), so they
#: may run beside the ``exclusive`` tests. A test here that starts Ray would meet their ``ray stop``.
NO_RAY = {
    "test_config.py", "test_house.py", "test_infra.py", "test_iu_xray.py", "test_labeler.py", "test_labeler_cases.py",
    "test_manifest.py", "test_manifests.py", "test_mimic.py", "test_phantom.py", "test_phantom_learnability.py",
    "test_precision.py", "test_storage.py", "test_stores.py", "test_table_ii_plan.py", "test_taef2.py",
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the :data:`NO_RAY` modules and hand out the longest modules first (a stable sort: the order
    inside a module is kept)."""
    for item in items:
        if item.path.name in NO_RAY:
            item.add_marker(pytest.mark.no_ray)
    items.sort(key=_rank)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail an ``exclusive`` test before its fixtures rather than run it beside other tests of this session
    on several pytest-xdist workers: its ``ray stop`` stops every Ray process on the machine. (Beside it may
    run only a separate session of ``no_ray`` tests, as infra/run_tests.sh does.)"""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and item.get_closest_marker("exclusive"):
        pytest.fail(
            f"marked exclusive: cannot run beside other tests on {workers} xdist workers; run `pytest -m "
            "exclusive` in a session of its own (infra/run_tests.sh does)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running moto S3 server; AWS_ENDPOINT_URL points at it for boto3 and pyarrow."""
    url = os.environ.get("DIFFCXR_TEST_S3_ENDPOINT")
    service = None
    if not url:
        service = start_moto(tmp_path_factory.mktemp("moto-logs"))
        url = service.url
    os.environ["AWS_ENDPOINT_URL"] = url
    from diffcxr.storage import configure_s3

    configure_s3(url)
    yield url
    if service:
        service.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server; returns ``s3://name``."""
    from infra.s3 import ensure_bucket

    name = f"test-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running MLflow tracking + registry server (sqlite backend)."""
    url = os.environ.get("DIFFCXR_TEST_MLFLOW_URI")
    if url:
        yield url
        return
    state = tmp_path_factory.mktemp("mlflow")
    service = start_mlflow(state, state / "logs")
    yield service.url
    service.stop()


@pytest.fixture
def experiment_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DIFFCXR_HOME (relative run roots, local MLflow store) at a temp folder."""
    monkeypatch.setenv("DIFFCXR_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def ray_local(s3_endpoint: str) -> Iterator[None]:
    """An in-process local Ray cluster per test module (started after the S3 endpoint is known, so its
    workers inherit it), shut down afterwards so that other modules can start their own Ray head."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=1 << 30,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "DIFFCXR_"))}},
        )
    yield
    ray.shutdown()


#: (HTTP status, the model that served the request or the error text) of one request
Outcome = tuple[int, str]


@pytest.fixture
def roll_under_load() -> Callable[..., list[Outcome]]:
    """Runs a model switch while clients keep generating: ``run(post, switch, new_model, clients, timeout)``
    starts ``clients`` threads calling ``post()``, calls ``switch()``, waits until a recent response was served
    by ``new_model`` (at most ``timeout`` s), stops the clients and returns every outcome in order. Shared by
    the in-place alias roll-over and the ``serve deploy`` roll-out tests."""

    def run(post: Callable[[], Any], switch: Callable[[], None], new_model: str, clients: int,
            timeout: float) -> list[Outcome]:  # fmt: skip
        results: list[Outcome] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                r = post()
                results.append((r.status_code, r.json()["models"]["model"] if r.ok else r.text[:300]))

        workers = [threading.Thread(target=load) for _ in range(clients)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        switch()
        deadline = time.time() + timeout
        while time.time() < deadline and not any(m == new_model for _, m in results[-clients:]):
            time.sleep(0.5)
        time.sleep(1.0)
        stop.set()
        for w in workers:
            w.join()
        return results

    return run
