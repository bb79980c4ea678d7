"""The Ray Serve generation graph against a real Serve app: HTTP, gRPC, handle, web page, DICOM, auth, fuzzing,
version switch and replica loss.

One app for the module (Serve start-up costs ~15 s): a generator bundle of the tiny architecture with initial
weights (real text encoder and TAEF2 decoder), registered in a real MLflow registry and served by alias, with
bearer-token auth on and two denoiser replicas.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from diffcxr.config import load_config
from infra.local import free_port

pytestmark = [pytest.mark.ray, pytest.mark.mlflow]
TOKEN = "test-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPORT = "Large right pleural effusion. The heart is enlarged."


class App:
    def __init__(self, url: str, grpc_port: int, name: str, config: dict[str, Any], model: str, tracker: Any) -> None:
        self.url, self.grpc_port, self.name, self.config, self.model, self.tracker = (
            url, grpc_port, name, config, model, tracker,
        )  # fmt: skip

    def post(self, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = "v1/generate") -> Any:
        return requests.post(self.url + path, json=body, headers={**AUTH, **(headers or {})}, timeout=120)

    def grpc(self, auth: bool = True, **fields: Any) -> Any:
        import grpc

        from services.serve.stubs import load

        pb2, pb2_grpc = load()
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = pb2_grpc.GeneratorStub(channel)
            meta = (("application", self.name), *((("authorization", f"Bearer {TOKEN}"),) if auth else ()))
            return stub.Generate(pb2.GenerateRequest(**fields), metadata=meta, timeout=120)


def _bundle(tmp: Path, seed: int) -> Path:
    from services.diffusion.generator import build_initial_bundle

    return build_initial_bundle(load_config("tiny", [f"project.seed={seed}"]), tmp / f"bundle-{seed}")


@pytest.fixture(scope="module")
def app(ray_local: None, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from ray import serve

    from diffcxr.tracking import Tracker
    from services.serve.app import build_app, start
    from services.serve.config import ServeConfig

    tmp = tmp_path_factory.mktemp("serving")
    tracker = Tracker(mlflow_server, f"serve-{uuid.uuid4().hex[:8]}")
    name = f"serve-test-{uuid.uuid4().hex[:8]}"
    with tracker.run("register"):
        tracker.register_bundle(name, {"bundle": _bundle(tmp, 0)}, {"kind": "generator"}, alias="champion")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    http_port, grpc_port = free_port(), free_port()
    config = {
        "model": f"models:/{name}@champion",
        "tracking_uri": mlflow_server,
        "model_cache": str(tmp / "cache"),
        "app_name": "diffcxr-test",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "auth": {"mode": "on", "token_file": str(token_file)},
        "limits": {"max_steps": 6, "max_images": 3, "max_concurrent_per_client": 64, "max_body_bytes": 32768},
        "default_steps": 3,
        "model_refresh_s": 1.0,
        "text": {"num_cpus": 0.2},
        "denoiser": {"replicas": 2, "num_cpus": 0.4, "threads": 1, "batch_wait_timeout_s": 0.05},
        "decoder": {"num_cpus": 0.2},
        "ingress": {"num_cpus": 0.1, "max_batch_size": 1, "max_ongoing_requests": 256},
    }
    cfg = ServeConfig.from_dict(config)
    start(cfg)
    the_app = App(f"http://127.0.0.1:{http_port}/", grpc_port, cfg.app_name, config, name, tracker)
    the_app.build_app = build_app  # type: ignore[attr-defined]
    the_app.tmp = tmp  # type: ignore[attr-defined]
    yield the_app
    serve.shutdown()


def _png(b64_or_bytes: str | bytes) -> Any:
    from PIL import Image

    data = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    return Image.open(io.BytesIO(data))


def test_http_generates_labelled_synthetic_pngs_and_names_the_versions(app: App) -> None:
    health = requests.get(app.url + "v1/health", timeout=30).json()
    assert health["status"] == "ok" and health["model"] == f"{app.model}/1"
    r = app.post({"report": REPORT, "seed": 11, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["synthetic"] is True and body["unconditional"] is False and body["warnings"] == []
    assert body["labels"]["Pleural Effusion"] == 1 and body["labels"]["Cardiomegaly"] == 1
    assert body["labels"]["Pneumothorax"] is None
    assert body["disease_sentence"] == "There is pleural effusion. There is cardiomegaly."
    assert body["steps"] == 3 and [im["seed"] for im in body["images"]] == [11, 12]
    assert body["models"]["model"] == f"{app.model}/1"
    assert set(body["models"]["served_by"].values()) == {f"{app.model}/1"}
    assert body["models"]["parts"]["autoencoder"].startswith("taef2@")
    first, second = (_png(im["data"]) for im in body["images"])
    assert first.size == (64, 64) and first.mode == "L"
    assert first.text["diffcxr.synthetic"] == "true" and first.text["diffcxr.seed"] == "11"
    assert "effusion" not in first.text["Description"].lower()  # the report text never goes into the file
    assert json.loads(first.text["diffcxr.models"])["generator"] == f"{app.model}/1"
    from diffcxr.precision import resolve_precision

    expected = resolve_precision("auto")  # the bundle's default, on this machine
    assert [im["precision"] for im in body["images"]] == [expected, expected] == [first.text["diffcxr.precision"]] * 2
    assert body["images"][0]["runtime"]["isa"] == first.text["diffcxr.isa"]
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    for im in body["images"]:
        assert hashlib.sha256(base64.b64decode(im["data"])).hexdigest() == im["sha256"]
    models = requests.get(app.url + "v1/models", headers=AUTH, timeout=30).json()
    assert models["model"] == f"{app.model}/1" and models["limits"]["max_steps"] == 6
    assert models["defaults"]["steps"] == 3 and models["auth"] is True


def test_same_request_gives_identical_bytes_over_http_grpc_handle_and_in_a_batch(app: App) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from ray import serve

    from services.diffusion.generator import Generator

    request = {"report": REPORT, "seed": 5, "steps": 4, "guidance": 2.5}
    http = base64.b64decode(app.post(request).json()["images"][0]["data"])
    grpc_reply = app.grpc(report=REPORT, seed=5, steps=4, guidance=2.5)
    handle = serve.get_app_handle(app.name).generate_dict.remote(request).result(timeout_s=120)
    assert grpc_reply.images[0].data == http == handle["images"][0]["bytes"]
    assert grpc_reply.images[0].precision == handle["images"][0]["precision"] in ("fp32", "bf16")
    assert grpc_reply.disease_sentence == "There is pleural effusion. There is cardiomegaly."
    assert dict(grpc_reply.labels)["Pleural Effusion"] == 1.0 and grpc_reply.model == f"{app.model}/1"
    # the in-process generator (pyfunc / CLI path) draws the same pixels at the denoiser's thread count
    # (oneDNN convolutions round differently with another intra-op thread count: docs/SERVING.md)
    threads = torch.get_num_threads()
    torch.set_num_threads(app.config["denoiser"]["threads"])
    try:
        local = Generator(next((app.tmp / "cache").rglob("generator.json")).parent)  # type: ignore[attr-defined]
        ref = local.generate([REPORT], [5], steps=4, guidance=2.5)[0].pixels
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(np.asarray(_png(http)), ref)
    # under concurrency requests share denoiser batches, and the image does not change
    others = [{"report": f"Case {i}: small left pneumothorax.", "seed": 100 + i, "steps": 4, "guidance": 2.5}
              for i in range(7)]  # fmt: skip
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda b: app.post(b).json(), [request, *others, request]))
    assert max(r["batch_sizes"]["denoise"] for r in replies) > 1
    for reply in (replies[0], replies[-1]):
        assert base64.b64decode(reply["images"][0]["data"]) == http


def test_png16_dicom_npy_zip_and_raw_outputs(app: App) -> None:
    import pydicom

    base = {"report": "Moderate pulmonary edema.", "seed": 3}
    png8 = np.asarray(_png(app.post(base).json()["images"][0]["data"])).astype(np.int64)
    png16 = _png(app.post({**base, "bit_depth": 16}).json()["images"][0]["data"])
    assert png16.mode == "I;16" and np.abs(np.round(np.asarray(png16) / 257.0) - png8).max() <= 1
    npy = np.load(io.BytesIO(base64.b64decode(app.post({**base, "format": "npy"}).json()["images"][0]["data"])))
    assert npy.dtype == np.float32 and np.array_equal(np.round(npy * 255).astype(np.int64), png8)

    dicoms = []
    for _ in range(2):
        r = app.post({**base, "format": "dicom"}, headers={"Accept": "application/dicom"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        dicoms.append(r.content)
    ds = pydicom.dcmread(io.BytesIO(dicoms[0]))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.ConversionType == "SYN"
    assert "SYNTHETIC" in ds.ImageComments and "Synthetic" in ds.DerivationDescription
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert str(ds.PatientName) == "" and ds.PatientID == "" and "edema" not in str(ds).lower()
    assert np.array_equal(ds.pixel_array.astype(np.int64), png8)
    other = pydicom.dcmread(io.BytesIO(dicoms[1]))
    assert other.SOPInstanceUID != ds.SOPInstanceUID and other.StudyInstanceUID != ds.StudyInstanceUID
    # a second, independent DICOM reader (DCMTK, as a viewer renders it) sees the same picture
    dcm, pgm = Path(app.tmp, "x.dcm"), Path(app.tmp, "x.pgm")  # type: ignore[attr-defined]
    dcm.write_bytes(dicoms[0])
    subprocess.run(["dcm2pnm", "--write-raw-pnm", str(dcm), str(pgm)], check=True, capture_output=True)
    assert np.array_equal(np.asarray(_png(pgm.read_bytes())).astype(np.int64), png8)

    r = app.post({**base, "num_images": 2}, headers={"Accept": "application/zip"})
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = sorted(zf.namelist())
        meta = json.loads(zf.read("response.json"))
        first = zf.read(names[0])
    assert names == ["image_00_seed3.png", "image_01_seed4.png", "response.json"]
    assert meta["images"][0]["sha256"] == hashlib.sha256(first).hexdigest()
    raw = app.post(base, headers={"Accept": "image/png"})
    assert raw.headers["content-type"] == "image/png" and raw.headers["X-Diffcxr-Seed"] == "3"
    assert np.array_equal(np.asarray(_png(raw.content)), png8)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"report": "x", "steps": 0}, "steps"),
        ({"report": "x", "steps": 7}, "steps"),  # above limits.max_steps
        ({"report": "x", "guidance": "strong"}, "guidance"),
        ({"report": "x", "num_images": 4}, "num_images"),
        ({"report": "x", "format": "jpeg"}, "format"),
        ({"report": "x", "bit_depth": 12}, "bit_depth"),
        ({"report": "x", "seed": -1}, "seed"),
        ({"report": "x", "seed": 2**63 - 1, "num_images": 2}, "seed"),
        ({"report": "x", "colour": "blue"}, "colour"),
        ({"report": 42}, "report"),
        ({"seed": 1}, "report"),
        ({"report": "x" * 20001}, "report"),
    ],
)
def test_invalid_fields_get_422_naming_the_field(app: App, body: dict[str, Any], field: str) -> None:
    r = app.post(body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_limits_auth_empty_report_and_grpc_errors(app: App) -> None:
    import grpc

    huge = app.post({"report": "a" * (1 << 20)})
    assert huge.status_code == 413 and huge.json()["error"]["field"] == "body"
    bad_json = requests.post(app.url + "v1/generate", data=b"{not json", headers=AUTH, timeout=30)
    assert bad_json.status_code == 422 and bad_json.json()["error"]["field"] == "body"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = requests.post(app.url + "v1/generate", json={"report": "x"}, headers=headers, timeout=30)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(app.url + "v1/models", timeout=30).status_code == 401
    cross = requests.options(
        app.url + "v1/generate", timeout=30,
        headers={"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )  # fmt: skip
    assert "access-control-allow-origin" not in {k.lower() for k in cross.headers}  # CORS off by default
    empty = app.post({"report": "   ", "seed": 1}).json()
    assert empty["unconditional"] is True and empty["warnings"][0].startswith("report: empty")
    assert empty["disease_sentence"] == "There is no finding."

    with pytest.raises(grpc.RpcError) as err:
        app.grpc(report="x", steps=0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("steps:")
    with pytest.raises(grpc.RpcError) as err:
        app.grpc(report="x", format="gif")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("format:")
    with pytest.raises(grpc.RpcError) as err:
        app.grpc(auth=False, report="x")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = app.grpc(report="", seed=2)
    assert ok.unconditional and ok.warnings[0].startswith("report: empty") and len(ok.images) == 1
    assert requests.get(app.url + "v1/health", timeout=30).json()["status"] == "ok"


def test_grpc_and_http_proxies_listen_on_127_0_0_1_only(app: App) -> None:
    """The default host binds both proxies to loopback; Serve alone would bind gRPC to every interface."""
    from test_serving_config import listening_addresses

    assert app.config.get("host") is None  # the default
    assert listening_addresses(app.grpc_port) == {"127.0.0.1"}
    assert listening_addresses(app.config["http_port"]) == {"127.0.0.1"}
    assert app.grpc(report="", seed=2).synthetic  # and answers there


def test_stream_reports_progress_per_image(app: App) -> None:
    r = requests.post(
        app.url + "v1/generate/stream", json={"report": REPORT, "seed": 1, "num_images": 3},
        headers=AUTH, stream=True, timeout=120,
    )  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in r.iter_lines() if line]
    kinds = [e["event"] for e in events]
    assert kinds == ["accepted", "labels", "image", "image", "image", "done"]
    assert [e["done"] for e in events if e["event"] == "image"] == [1, 2, 3]
    done = events[-1]["response"]
    assert sorted(im["seed"] for im in done["images"]) == [1, 2, 3]
    assert {e["image"]["sha256"] for e in events if e["event"] == "image"} == {im["sha256"] for im in done["images"]}


def test_fuzzing_the_openapi_schema_gives_no_server_error(app: App) -> None:
    """Schema-driven valid and invalid requests: every answer is 2xx or a 4xx JSON error, never 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_url(app.url + "openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/v1/generate"), ("POST", "/v1/generate/stream"), ("GET", "/v1/health"), ("GET", "/v1/models"),
    }  # fmt: skip
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for op in operations for mode in modes])
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(base_url=app.url.rstrip("/"), headers=AUTH, timeout=120)
        seen.append(response.status_code)
        assert response.status_code < 500, response.text[:500]
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["status"] == response.status_code and error["message"]
            if response.status_code == 422:
                assert error["field"], error

    check()
    assert any(code == 200 for code in seen) and any(code == 422 for code in seen)
    assert requests.get(app.url + "v1/health", timeout=30).json()["status"] == "ok"


def test_web_page_in_headless_chromium_shows_image_and_labels(app: App) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={app.tmp / 'chromium'}"):  # type: ignore[attr-defined]  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(app.url)
        assert "SYNTHETIC" in driver.find_element(By.CLASS_NAME, "banner").text
        assert driver.find_element(By.ID, "token-box").is_displayed()  # auth is on: the page asks for it
        driver.find_element(By.ID, "report").send_keys(REPORT)
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 60).until(lambda d: "token" in d.find_element(By.ID, "status").text)
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "num_images").clear()
        driver.find_element(By.ID, "num_images").send_keys("2")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
        images = driver.find_elements(By.CSS_SELECTOR, "img.result")
        assert len(images) == 2
        assert all(driver.execute_script("return arguments[0].naturalWidth", im) == 64 for im in images)
        assert driver.find_element(By.ID, "sentence").text == "There is pleural effusion. There is cardiomegaly."
        assert "Pleural Effusion" in driver.find_element(By.ID, "labels").text
        assert len(driver.find_elements(By.CLASS_NAME, "dl-dicom")) == 2
    finally:
        driver.quit()


def test_moving_the_alias_rolls_to_the_new_version_without_dropping_requests(
    app: App, roll_under_load: Callable[..., list[tuple[int, str]]]
) -> None:
    with app.tracker.run("register-v2"):
        version = app.tracker.register_bundle(
            app.model,
            {"bundle": _bundle(app.tmp, 1)},
            {"kind": "generator"},  # type: ignore[attr-defined]
        )
    assert version == 2
    request = {"report": REPORT, "seed": 9}
    before = app.post(request).json()
    results = roll_under_load(
        lambda: app.post(request),
        lambda: app.tracker.set_alias(app.model, "champion", 2),  # the ingress re-reads it every model_refresh_s
        f"{app.model}/2", clients=3, timeout=120,
    )  # fmt: skip
    assert results and all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    models = [m for _, m in results]
    assert models[0] == f"{app.model}/1" and models[-1] == f"{app.model}/2"
    after = app.post(request).json()
    assert after["models"]["model"] == f"{app.model}/2"
    assert set(after["models"]["served_by"].values()) == {f"{app.model}/2"}  # no part of v1 in a v2 image
    assert after["images"][0]["sha256"] != before["images"][0]["sha256"]  # other weights, other image
    # Health asks one denoiser replica of two; "current" is the version that replica used last, and the
    # multiplexing router may have sent every v2 request to the other one: ask until the v2 replica answers.
    for _ in range(20):
        health = requests.get(app.url + "v1/health", timeout=30).json()
        assert health["model"] == f"{app.model}/2"
        if health["deployments"]["denoiser"]["current"] == f"{app.model}/2":
            break
    assert health["deployments"]["denoiser"]["current"] == f"{app.model}/2", health


def test_killing_a_denoiser_replica_under_load_loses_no_request(app: App) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import ray
    from ray import serve

    def replicas() -> list[str]:
        return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if "denoiser" in a["name"] and a["namespace"] == "serve"]  # fmt: skip

    assert len(replicas()) == 2
    killed = threading.Event()

    def one(i: int) -> int:
        if i == 12:
            ray.kill(ray.get_actor(replicas()[0], namespace="serve"), no_restart=True)
            killed.set()
        r = app.post({"report": f"Case {i}. Bilateral pleural effusions.", "seed": i, "steps": 4})
        return r.status_code, r.text[:300]

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(one, range(80)))
    assert killed.is_set()
    failures = [text for code, text in replies if code != 200]
    assert len(failures) / len(replies) <= 0.01, failures
    deadline = time.time() + 120
    while time.time() < deadline:
        status = serve.status().applications[app.name].deployments["denoiser"]
        if status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    assert status.replica_states.get("RUNNING", 0) == 2, status
    assert app.post({"report": "Clear lungs.", "seed": 1}).status_code == 200


def test_logs_carry_report_fingerprints_never_report_text(app: App) -> None:
    import ray

    secret = "Distinctive phrase " + uuid.uuid4().hex + " with a moderate left pneumothorax."
    assert app.post({"report": secret, "seed": 1}).status_code == 200
    app.grpc(report=secret, seed=1)
    time.sleep(2.0)  # log files are flushed asynchronously
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    text = "\n".join(
        p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in (".log", ".err", ".out")
    )
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:12]
    assert f"report=sha256:{fingerprint} len={len(secret)}" in text
    assert secret[:40] not in text and "moderate left pneumothorax" not in text
