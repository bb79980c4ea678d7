"""Serving configuration, deploy config, auth and limits as units (no Ray, no model)."""

from __future__ import annotations

import importlib
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffcxr.errors import ConfigError
from infra.local import free_port
from services.serve.config import AuthConfig, ServeConfig
from services.serve.security import ClientLimiter, TokenCheck, report_fingerprint


def test_serve_config_rejects_unknown_and_out_of_range_keys_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"denoiser\.replica: Extra inputs"):
        ServeConfig.from_dict({"denoiser": {"replica": 2}})
    with pytest.raises(ConfigError, match=r"limits\.max_steps: Input should be less than or equal to 1000"):
        ServeConfig.from_dict({"limits": {"max_steps": 5000}})
    path = tmp_path / "serve.yaml"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        ServeConfig.from_yaml(path)
    defaults = ServeConfig()
    assert defaults.host == "127.0.0.1" and defaults.cors_origins == [] and defaults.auth.mode == "auto"
    total = sum(
        getattr(defaults, d).num_cpus * getattr(defaults, d).replicas
        for d in ("text", "denoiser", "decoder", "ingress")
    )
    assert total <= 2.0  # the default graph fits a 2-core laptop


def test_print_deploy_config_is_a_valid_serve_deploy_file(tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        yaml.safe_dump({"model": "models:/diffcxr-generator@champion", "denoiser": {"num_gpus": 1, "replicas": 3}})
    )
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "serve", "--config", str(cfg), "--print-deploy-config",
         "--port", "8123"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    schema = ServeDeploySchema(**doc)
    app = schema.applications[0]
    assert app.import_path == "services.serve.app:build_app" and app.route_prefix == "/"
    assert doc["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert doc["grpc_options"]["grpc_servicer_functions"] == [
        "services.serve.generator_pb2_grpc.add_GeneratorServicer_to_server"
    ]
    assert ServeConfig.from_dict(app.args).denoiser.num_gpus == 1  # the args round-trip into a ServeConfig
    bad = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "serve", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_stubs_are_importable_from_the_installed_package() -> None:
    from services.serve import generator_pb2, generator_pb2_grpc

    request = generator_pb2.GenerateRequest(report="x", seed=3)
    assert request.HasField("seed") and not request.HasField("steps")
    assert generator_pb2.DESCRIPTOR.package == "diffcxr.v1"
    assert hasattr(generator_pb2_grpc, "add_GeneratorServicer_to_server")


def test_token_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFCXR_SERVE_TOKEN", raising=False)
    assert not TokenCheck(AuthConfig()).enabled  # auto, no token anywhere: off
    with pytest.raises(ConfigError, match="auth.mode is 'on'"):
        TokenCheck(AuthConfig(mode="on"))
    monkeypatch.setenv("DIFFCXR_SERVE_TOKEN", "s3cret")
    check = TokenCheck(AuthConfig())
    assert check.enabled and check.accepts("Bearer s3cret") and check.accepts("bearer s3cret")
    for wrong in (None, "", "s3cret", "Bearer s3cre", "Basic s3cret", "Bearer s3cret2"):
        assert not check.accepts(wrong)
    assert not TokenCheck(AuthConfig(mode="off")).enabled
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        TokenCheck(AuthConfig(token_file=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="cannot read"):
        TokenCheck(AuthConfig(token_file=str(tmp_path / "nope")))


def test_client_limiter_and_report_fingerprint() -> None:
    limiter = ClientLimiter(2)
    assert limiter.acquire("a") and limiter.acquire("a") and not limiter.acquire("a") and limiter.acquire("b")
    limiter.release("a")
    assert limiter.acquire("a")
    text = "Small left pleural effusion."
    fp = report_fingerprint(text)
    assert fp.startswith("sha256:") and fp.endswith(f"len={len(text)}") and "effusion" not in fp


def test_default_deploy_config_binds_grpc_to_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Serve's gRPC proxy has no host option (it binds ``[::]``); the deploy config hands the proxies the
    hook that makes them bind ``host``, and the hook really binds a gRPC server there."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from ray.serve._private import default_impl
    from ray.serve.schema import ServeDeploySchema

    from services.serve.app import deploy_config
    from services.serve.grpc_bind import CALLBACK_ENV, HOST_ENV, proxy_callback

    doc = yaml.safe_load(deploy_config(ServeConfig()))
    schema = ServeDeploySchema(**doc)
    assert doc["http_options"]["host"] == "127.0.0.1" and schema.grpc_options.port == 9000
    env = schema.controller_options.runtime_env["env_vars"]
    assert env[HOST_ENV] == "127.0.0.1"
    module, _, function = env[CALLBACK_ENV].partition(":")
    assert getattr(importlib.import_module(module), function) is proxy_callback
    # a wildcard host (the k8s manifest's 0.0.0.0) is what Serve binds anyway: no hook
    assert "controller_options" not in yaml.safe_load(deploy_config(ServeConfig(host="0.0.0.0")))
    assert "controller_options" not in yaml.safe_load(deploy_config(ServeConfig(grpc_port=None)))

    # what a proxy process does with the hook: Serve's own "[::]:PORT" ends up on 127.0.0.1 only
    monkeypatch.setattr(default_impl, "add_grpc_address", default_impl.add_grpc_address)  # restored after
    monkeypatch.setenv(HOST_ENV, env[HOST_ENV])
    assert proxy_callback() == []
    port = free_port()
    server = grpc.server(ThreadPoolExecutor(1))
    try:
        default_impl.add_grpc_address(server, f"[::]:{port}")
        server.start()
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        server.stop(None)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                ip = ipaddress.ip_address(words)
                found.add(str(getattr(ip, "ipv4_mapped", None) or ip))  # ::ffff:127.0.0.1 is 127.0.0.1
    return found
