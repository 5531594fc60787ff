"""The Kubernetes pod template of the GPU job, read as YAML: its shape, its Secret, its
volumes, its user. tests/dags/test_kubernetes_pod.py builds the pod from it with the
retrain DAG's own operator and runs that pod's command."""

from __future__ import annotations

from typing import Any

import yaml

from tests.infra.helpers import INFRA, dockerfile_instructions

TEMPLATE = INFRA / "k8s/trainer-pod.yaml"
SECRET = "cosine-retrain-secrets"
REQUIRED_KEYS = [
    "MLFLOW_TRACKING_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_S3_ENDPOINT_URL",
]


def pod() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def base(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in spec["spec"]["containers"] if c["name"] == "base"]
    return container


def test_the_template_is_a_never_restarting_pod_with_container_base() -> None:
    spec = pod()
    assert spec["apiVersion"] == "v1"
    assert spec["kind"] == "Pod"
    assert spec["spec"]["restartPolicy"] == "Never"
    assert [c["name"] for c in spec["spec"]["containers"]] == ["base"]
    c = base(spec)
    assert c["command"] == ["python", "-m", "training"]
    assert c["args"][:3] == ["train", "--config", "/config/train.yaml"]
    assert "--run-name" in c["args"]
    assert spec["spec"]["terminationGracePeriodSeconds"] >= 60  # time to checkpoint on SIGTERM


def test_one_gpu_on_a_gpu_node() -> None:
    spec = pod()
    resources = base(spec)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert spec["spec"]["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        spec["spec"]["tolerations"]
    )


def test_mlflow_and_object_store_settings_come_from_the_secret() -> None:
    env = {e["name"]: e for e in base(pod())["env"]}
    for key in REQUIRED_KEYS:
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": SECRET, "key": key}, ref  # required: no `optional`
        assert "value" not in env[key]
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["COSINE_RETRAIN_PUSHGATEWAY_URL"]["valueFrom"]["secretKeyRef"]["optional"]
    example = yaml.safe_load((INFRA / "k8s/secrets.example.yaml").read_text())
    assert example["metadata"]["name"] == SECRET
    keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "valueFrom" in e}
    assert keys <= set(example["stringData"])


def test_checkpoints_survive_the_pod_on_a_pvc_at_the_images_output_dir() -> None:
    spec = pod()
    volumes = {v["name"]: v for v in spec["spec"]["volumes"]}
    mounts = {m["name"]: m for m in base(spec)["volumeMounts"]}
    claim = volumes["checkpoints"]["persistentVolumeClaim"]["claimName"]
    pvc = yaml.safe_load((INFRA / "k8s/checkpoints-pvc.yaml").read_text())
    assert claim == pvc["metadata"]["name"]
    workdir = [
        r for w, r in dockerfile_instructions(INFRA / "trainer/Dockerfile") if w == "WORKDIR"
    ]
    assert mounts["checkpoints"]["mountPath"] == f"{workdir[-1]}/.cosine-retrain"
    assert mounts["train-config"]["mountPath"] == "/config"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


def test_runs_as_the_images_non_root_user_with_a_read_only_root() -> None:
    spec = pod()
    users = [r for w, r in dockerfile_instructions(INFRA / "trainer/Dockerfile") if w == "USER"]
    uid = int(users[-1].split(":")[0])
    security = spec["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == uid
    c = base(spec)["securityContext"]
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    # a read-only root needs a writable /tmp for matplotlib and torch
    assert any(m["mountPath"] == "/tmp" for m in base(spec)["volumeMounts"])
