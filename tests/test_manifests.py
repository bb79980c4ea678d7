"""The deployment files (infra/k8s, infra/cloud/aws.yaml, infra/docker/Dockerfile), checked offline.

No cluster is needed or contacted. Core Kubernetes kinds are validated strictly against the published
OpenAPI schemas (kubernetes-validate); KubeRay's kinds against a compact schema of the fields we use (so a
misspelt key fails) plus their embedded pod templates against the Kubernetes schema; the Ray cluster
launcher file against Ray's own validator. Beyond syntax, every value our code reads is handed to that code:
the RayJob entrypoint to the pipeline's argument parser and config loader, serveConfigV2 to Ray Serve's
schema and our ServeConfig. Each validator is also shown to reject a broken input, so the checks are live.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "infra" / "k8s"
AWS = REPO / "infra" / "cloud" / "aws.yaml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
NAMESPACE = "diffcxr"
IMAGE = "diffcxr:0.1.0"
#: A Kubernetes release that kubernetes-validate 1.37.0 ships schemas for and current managed clusters run.
K8S_VERSION = "1.34.0"

CORE_KINDS = {"Namespace", "Secret", "ConfigMap", "Service", "Deployment", "StatefulSet"}
KUBERAY_KINDS = {"RayCluster", "RayJob", "RayService"}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


MANIFESTS = {path.name: _load(path) for path in sorted(K8S.glob("*.yaml"))}
RESOURCES = [
    pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
    for name, docs in MANIFESTS.items()
    for doc in docs
    if doc.get("kind") != "Kustomization"
]


def _docs(kind: str, file: str | None = None) -> list[dict[str, Any]]:
    return [d for name, docs in MANIFESTS.items() if file in (None, name) for d in docs if d.get("kind") == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _docs(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} '{name}' in infra/k8s, found {len(found)}"
    return found[0]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _validate_k8s(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside any KubeRay kind."""
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[doc["kind"]]
    return doc["spec"] if key is None else doc["spec"][key]


def _templates(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", spec["headGroupSpec"]["template"])]
    return groups + [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]


def _quantity(value: str | int | float) -> float:
    """A Kubernetes CPU/GPU quantity as a number ("10", 1, "500m")."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _gpu_groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    def asks_for_gpu(group: dict[str, Any]) -> bool:
        containers = group["template"]["spec"]["containers"]
        return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers)

    return [g for g in spec.get("workerGroupSpecs", []) if asks_for_gpu(g)]


def _limits(group: dict[str, Any]) -> dict[str, Any]:
    (container,) = group["template"]["spec"]["containers"]
    return container["resources"]["limits"]


def _configmap_env() -> dict[str, str]:
    return _one("ConfigMap", "diffcxr-env")["data"]


# ---------------------------------------------------------------------------- KubeRay (compact schema)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_POD_TEMPLATE = {"type": "object", "required": ["spec"]}  # checked field by field by the Kubernetes schema
_REPLICAS = {"type": "integer", "minimum": 0}
_HEAD_GROUP = {
    "type": "object",
    "required": ["rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "rayStartParams": _STRING_MAP,  # KubeRay takes strings only: num-cpus: 0 unquoted is an error
        "template": _POD_TEMPLATE,
    },
}
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": _REPLICAS,
        "minReplicas": _REPLICAS,
        "maxReplicas": _REPLICAS,
        "numOfHosts": {"type": "integer", "minimum": 1},
        "rayStartParams": _STRING_MAP,
        "template": _POD_TEMPLATE,
    },
}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
    "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": _WORKER_GROUP},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 48},
        "namespace": {"const": NAMESPACE},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}


def _kuberay_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


KUBERAY_SCHEMAS = {
    "RayCluster": _kuberay_schema("RayCluster", _CLUSTER_SPEC),
    "RayJob": _kuberay_schema(
        "RayJob",
        {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "additionalProperties": False,
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "runtimeEnvYAML": {"type": "string"},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "backoffLimit": {"type": "integer", "minimum": 0},
                "rayClusterSpec": _CLUSTER_SPEC,
            },
        },
    ),
    "RayService": _kuberay_schema(
        "RayService",
        {
            "type": "object",
            "required": ["serveConfigV2", "rayClusterConfig"],
            "additionalProperties": False,
            "properties": {"serveConfigV2": {"type": "string", "minLength": 1}, "rayClusterConfig": _CLUSTER_SPEC},
        },
    ),
}


# ---------------------------------------------------------------------------- every document


def test_every_manifest_parses_and_is_a_known_kind() -> None:
    assert {"namespace.yaml", "secrets.example.yaml", "configmap.yaml", "mlflow.yaml", "kustomization.yaml"} <= set(
        MANIFESTS
    )
    assert {"raycluster.yaml", "rayjob.yaml", "rayservice.yaml"} <= set(MANIFESTS)
    for name, docs in MANIFESTS.items():
        assert docs, f"{name} holds no document"
        for doc in docs:
            kind = doc.get("kind")
            # a kind outside these sets would pass unvalidated: make adding one a conscious decision
            assert kind in CORE_KINDS | KUBERAY_KINDS | {"Kustomization"}, f"{name}: no validation for kind {kind}"
            if kind not in ("Namespace", "Kustomization"):
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {kind} outside {NAMESPACE}"


@pytest.mark.parametrize("doc", [p for p in RESOURCES if p.values[0]["kind"] in CORE_KINDS])
def test_core_kinds_validate_strictly(doc: dict[str, Any]) -> None:
    _validate_k8s(doc)


@pytest.mark.parametrize("doc", [p for p in RESOURCES if p.values[0]["kind"] in KUBERAY_KINDS])
def test_kuberay_kinds_match_the_fields_we_use(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, KUBERAY_SCHEMAS[doc["kind"]])
    spec = _cluster_spec(doc)
    for group in spec["workerGroupSpecs"]:
        low, high = group["minReplicas"], group["maxReplicas"]
        assert low <= group.get("replicas", low) <= high, f"{group['groupName']}: replicas outside [min, max]"
    for name, template in _templates(spec):
        try:
            _validate_k8s(_as_pod_template(template))
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} group {name}: {path}: {exc.message}")


@pytest.mark.parametrize("doc", [p for p in RESOURCES if p.values[0]["kind"] in KUBERAY_KINDS])
def test_kuberay_clusters_run_our_image_and_ray_version_with_a_gpu_group(doc: dict[str, Any]) -> None:
    import ray

    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "work must not land on the head"
    for name, template in _templates(spec):
        for container in template["spec"]["containers"]:
            assert container["image"] == IMAGE, f"group {name} runs {container['image']}"
            refs = {next(iter(ref.values()))["name"] for ref in container.get("envFrom", [])}
            assert {"diffcxr-env", "diffcxr-s3"} <= refs, f"group {name} lacks the shared environment"
    gpu_groups = _gpu_groups(spec)
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    for group in gpu_groups:
        (container,) = group["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        # extended resources cannot be overcommitted: Kubernetes requires requests == limits for them
        assert container["resources"].get("requests", {}).get("nvidia.com/gpu", gpus) == gpus
        tolerations = group["template"]["spec"].get("tolerations", [])
        assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in tolerations)


def test_strict_validation_rejects_a_misspelt_pod_field() -> None:
    template = copy.deepcopy(_templates(_cluster_spec(_one("RayCluster", "diffcxr")))[0][1])
    template["spec"]["contaners"] = template["spec"].pop("containers")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_k8s(_as_pod_template(template))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["spec"].update(enableInTreeAutoScaling=True),  # wrong case
        lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplica=3),
        lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),  # not a string
        lambda d: d.update(apiVersion="ray.io/v1alpha1"),
    ],
    ids=["spec-key-case", "worker-key", "start-param-type", "api-version"],
)
def test_kuberay_schema_rejects_typos(edit: Any) -> None:
    doc = copy.deepcopy(_one("RayCluster", "diffcxr"))
    edit(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, KUBERAY_SCHEMAS["RayCluster"])


# ---------------------------------------------------------------------------- references between files


def test_every_secret_and_configmap_reference_is_defined() -> None:
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {})) for d in _docs("Secret")}
    configmaps = {d["metadata"]["name"]: set(d.get("data", {})) for d in _docs("ConfigMap")}
    assert set(secrets) == {"diffcxr-s3", "mlflow-postgres"}
    assert all(d in MANIFESTS["secrets.example.yaml"] for d in _docs("Secret")), "secrets belong in the example only"
    used = 0
    for name, docs in MANIFESTS.items():
        for node in _walk(docs):
            for key, defined in (
                ("secretRef", secrets),
                ("configMapRef", configmaps),
                ("secretKeyRef", secrets),
                ("configMapKeyRef", configmaps),
            ):
                if key not in node:
                    continue
                used += 1
                ref = node[key]
                assert ref["name"] in defined, f"{name}: {key} to undefined '{ref['name']}'"
                if "key" in ref:
                    assert ref["key"] in defined[ref["name"]], f"{name}: {ref['name']} has no key {ref['key']}"
    assert used >= 10


def test_secrets_example_holds_placeholders_only() -> None:
    for secret in _docs("Secret"):
        values = secret["stringData"]
        for key in ("AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD"):
            assert values.get(key, "change-me") == "change-me", f"{secret['metadata']['name']}: a real {key}?"


def test_configmap_points_at_the_in_cluster_mlflow_and_sets_no_empty_value() -> None:
    env = _configmap_env()
    # boto3 (and MLflow's S3 client) reject endpoint_url="": an endpoint is either set or absent
    assert all(value != "" for value in env.values()), "empty values in diffcxr-env"
    uri = urlparse(env["MLFLOW_TRACKING_URI"])
    assert uri.hostname == f"mlflow.{NAMESPACE}.svc.cluster.local"
    service = _one("Service", uri.hostname.split(".")[0])
    assert uri.port in [p["port"] for p in service["spec"]["ports"]]
    assert env["HF_HUB_OFFLINE"] == "1" and env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_kustomization_lists_every_manifest_but_the_secrets_example() -> None:
    (kustomization,) = MANIFESTS["kustomization.yaml"]
    assert kustomization["namespace"] == NAMESPACE
    expected = set(MANIFESTS) - {"secrets.example.yaml", "kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(expected)
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE.split(":")[0] and {"newName", "newTag"} <= set(image)


def test_kustomize_build_puts_the_pushed_image_into_every_pod_template() -> None:
    """The images: transformer must reach the containers inside the KubeRay kinds too, or their pods would
    pull a `diffcxr:0.1.0` that exists on no registry."""
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=120)
    built = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    (kustomization,) = MANIFESTS["kustomization.yaml"]
    (image,) = kustomization["images"]
    pushed = f"{image['newName']}:{image['newTag']}"
    assert sorted(d["kind"] for d in built) == sorted(
        p.values[0]["kind"] for p in RESOURCES if p.values[0]["kind"] != "Secret"
    )

    def images(docs: Any) -> list[str]:
        return [
            c["image"] for node in _walk(docs) for key in ("containers", "initContainers") for c in node.get(key, [])
        ]

    source = [i for docs in MANIFESTS.values() for i in images(docs) if i == IMAGE]
    assert len(source) >= 9  # MLflow plus every Ray head and worker group
    assert [i for i in images(built) if not i.startswith("postgres:")] == [pushed] * len(source)
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in built if d["kind"] != "Namespace")


# ---------------------------------------------------------------------------- MLflow


def test_mlflow_server_uses_the_postgres_service_and_s3_artifacts() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    deployment = _one("Deployment", "mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["mlflow", "server"]
    options = dict(a[2:].split("=", 1) for a in argv[2:])
    backend = options["backend-store-uri"]
    assert backend.startswith("postgresql://")
    # the kubelet expands $(VAR) only for variables the container defines; anything else stays literal
    env_names = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\((\w+)\)", backend)) <= env_names
    host = urlparse(re.sub(r"\$\(\w+\)", "x", backend))
    postgres = _one("Service", host.hostname)
    assert postgres in MANIFESTS["mlflow.yaml"]
    assert host.port in [p["port"] for p in postgres["spec"]["ports"]]
    assert _one("StatefulSet", host.hostname)["spec"]["serviceName"] == host.hostname
    assert options["artifacts-destination"].startswith("s3://")
    # MLflow 3 answers 403 to Host headers it does not allow: the URI every client uses must pass
    tracking = urlparse(_configmap_env()["MLFLOW_TRACKING_URI"])
    allowed = options["allowed-hosts"].split(",")
    assert is_allowed_host_header(allowed, tracking.netloc)
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")
    # the Service in front of it selects these pods
    service = _one("Service", "mlflow")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


# ---------------------------------------------------------------------------- RayJob


def _rayjob_config() -> tuple[Any, Any]:
    from diffcxr.config import load_config
    from orchestration.full_pipeline import build_parser

    job = _one("RayJob", "diffcxr-pipeline")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "orchestration/full_pipeline.py"], argv
    args = build_parser().parse_args(argv[2:])
    return job, load_config(args.profile, args.overrides)


def test_rayjob_entrypoint_is_a_valid_pipeline_command() -> None:
    job, cfg = _rayjob_config()  # every --set key and value went through the config schema
    assert cfg.ray.use_gpu is True
    assert cfg.run_root.startswith("s3://"), "a cluster run must write where the next run can find it"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["submissionMode"] == "K8sJobMode"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == _dockerfile_workdir(), "the job must start from the code in the image"


def test_rayjob_gpu_workers_fit_the_training_workers() -> None:
    job, cfg = _rayjob_config()
    spec = job["spec"]["rayClusterSpec"]
    capacity = 0.0
    for group in _gpu_groups(spec):
        limits = _limits(group)
        if _quantity(limits["cpu"]) >= cfg.ray.cpus_per_worker:  # a Train worker takes its GPU and CPUs on one pod
            capacity += _quantity(limits["nvidia.com/gpu"]) * group["maxReplicas"]
    assert capacity >= cfg.ray.num_workers, "the GPU group cannot hold ray.num_workers Train workers"


# ---------------------------------------------------------------------------- RayService


def test_rayservice_serve_config_is_valid_for_ray_serve_and_our_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve.schema import ServeDeploySchema

    from services.serve.app import IMPORT_PATH, deploy_config
    from services.serve.config import ServeConfig

    service = _one("RayService", "diffcxr-serve")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    (app,) = serve["applications"]
    assert app["import_path"] == IMPORT_PATH
    cfg = ServeConfig.from_dict(app["args"], where="rayservice.yaml serveConfigV2 args")
    assert cfg.host == serve["http_options"]["host"] == "0.0.0.0"
    assert cfg.tracking_uri == _configmap_env()["MLFLOW_TRACKING_URI"]
    assert cfg.denoiser.num_gpus >= 1
    # exactly what `diffcxr serve --print-deploy-config` writes for these args, so it can be regenerated
    for name in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert serve == yaml.safe_load(deploy_config(cfg))
    # the always-on GPU workers hold every denoiser replica: the service comes up without waiting for scale-up
    gpus = sum(
        _quantity(_limits(g)["nvidia.com/gpu"]) * g["minReplicas"]
        for g in _gpu_groups(service["spec"]["rayClusterConfig"])
    )
    assert gpus >= cfg.denoiser.replicas * cfg.denoiser.num_gpus


def test_rayservice_serve_config_rejects_an_unknown_arg() -> None:
    from diffcxr.errors import ConfigError
    from services.serve.config import ServeConfig

    serve = yaml.safe_load(_one("RayService", "diffcxr-serve")["spec"]["serveConfigV2"])
    args = serve["applications"][0]["args"]
    args["denoiser"]["num_gpu"] = 1
    with pytest.raises(ConfigError, match="num_gpu"):
        ServeConfig.from_dict(args)


# ---------------------------------------------------------------------------- image and ray up


def _dockerfile_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    return workdir


def test_dockerfile_base_matches_the_pinned_ray_and_installs_the_package() -> None:
    import ray

    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG BASE=(\S+)", text, flags=re.M)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    copied = {word.rstrip("/") for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.M) for word in line.split()}
    # everything the package build reads (pyproject's readme too) and every package it installs
    assert {"pyproject.toml", "setup.py", "README.md", "diffcxr", "services", "orchestration", "infra"} <= copied
    assert re.search(r"^RUN pip install --no-cache-dir /app\b", text, flags=re.M), "non-editable install of /app"
    assert "psycopg2-binary" in text, "mlflow.yaml runs this image against PostgreSQL"
    assert _dockerfile_workdir() == "/app" == _configmap_env()["DIFFCXR_HOME"]


def _prepared_aws(raw: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: the file merged with the provider's defaults (no AWS call)."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(raw))


def test_aws_cluster_config_passes_rays_validator() -> None:
    import ray
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load(AWS.read_text())
    validate_config(_prepared_aws(raw))
    assert raw["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"].get("CPU") == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())


def test_aws_validator_rejects_a_misspelt_key() -> None:
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load(AWS.read_text())
    raw["max_worker"] = raw.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(_prepared_aws(raw))
