"""Static checks of the deployable stack (compose.yaml, deploy/, Dockerfile): it
cannot run here (no Docker engine), so every name, port, path and environment
variable is checked against Carafe's own config models instead."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from carafe.config import CarafeConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
CARAFE_SERVICES = ("gateway", "indexer")
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with nothing set in the environment."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _field(env_name: str) -> tuple[list[str], Any]:
    """The config field a ``CARAFE_SECTION__FIELD`` variable sets (KeyError if none)."""
    path = env_name.removeprefix("CARAFE_").lower().split("__")
    model: type[BaseModel] = CarafeConfig
    info = None
    for i, part in enumerate(path):
        info = model.model_fields[part]
        if i < len(path) - 1:
            model = info.annotation  # nested sections are plain BaseModel classes
    return path, info


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source, for short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out[parts[1]] = parts[0]
    return out


def _flags(service: dict[str, Any]) -> dict[str, str]:
    return dict(
        arg.removeprefix("--").split("=", 1) if "=" in arg else (arg.removeprefix("--"), "")
        for arg in service.get("command", [])
        if arg.startswith("--")
    )


def test_compose_parses_and_names_the_whole_stack(compose: dict[str, Any]) -> None:
    assert {"gateway", "indexer", "vllm", "qdrant", "otel-collector", "jaeger"} <= set(compose["services"])
    assert {"carafe-data", "carafe-registry", "qdrant-storage"} <= set(compose["volumes"])
    for name, svc in compose["services"].items():
        for net in svc.get("networks", []):
            assert net in compose["networks"], f"{name} joins undefined network {net}"
        for vol in _mounts(svc).values():
            assert vol.startswith((".", "/")) or vol in compose["volumes"], f"{name} mounts undefined volume {vol}"
        for dep in svc.get("depends_on", {}):
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on PATH")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker client has no compose plugin")
    res = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("service", CARAFE_SERVICES)
def test_every_carafe_variable_is_a_real_config_field(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        k: v for k, v in _env(compose["services"][service]).items() if k.startswith("CARAFE_") and k != "CARAFE_CONFIG"
    }
    assert env
    for name in env:
        try:
            _field(name)
        except KeyError:
            pytest.fail(f"{service}: {name} names no field of CarafeConfig")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "deploy" / "carafe.compose.yaml")
    for name, value in env.items():
        path, _ = _field(name)
        got: Any = cfg
        for part in path:
            got = getattr(got, part)
        got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
        if value == "":
            assert got in (None, ""), f"{name}"
        elif isinstance(got, bool):
            assert got is (value.lower() == "true"), name
        else:
            assert str(got) == value, f"{name}={value!r} became {got!r}"


def test_mounted_config_is_the_one_carafe_config_names(compose: dict[str, Any]) -> None:
    for service in CARAFE_SERVICES:
        svc = compose["services"][service]
        config_path = _env(svc)["CARAFE_CONFIG"]
        assert _mounts(svc)[config_path] == "./deploy/carafe.compose.yaml"
    cfg = load_config(ROOT / "deploy" / "carafe.compose.yaml")
    indexer_mounts = _mounts(compose["services"]["indexer"])
    for source in cfg.indexer.sources:
        assert str(source.path) in indexer_mounts, f"source {source.name} is not mounted into the indexer"


def _shares_network(compose: dict[str, Any], a: str, b: str) -> bool:
    return bool(set(compose["services"][a]["networks"]) & set(compose["services"][b]["networks"]))


def test_endpoints_point_at_services_on_a_shared_network_and_the_right_port(compose: dict[str, Any]) -> None:
    svcs = compose["services"]
    gw = _env(svcs["gateway"])
    assert gw["CARAFE_ADAPTERS__ENGINE__BACKEND"] == "vllm"
    vllm_url = urlsplit(gw["CARAFE_ADAPTERS__ENGINE__VLLM_URL"])
    assert vllm_url.hostname == "vllm" and str(vllm_url.port) == _flags(svcs["vllm"])["port"]
    assert _shares_network(compose, "gateway", "vllm")
    assert gw["CARAFE_ADAPTERS__ENGINE__MODEL_ID"] == _flags(svcs["vllm"])["served-model-name"]
    for service in CARAFE_SERVICES:
        env = _env(svcs[service])
        qdrant = urlsplit(env["CARAFE_INDEXER__QDRANT__URL"])
        assert qdrant.hostname == "qdrant" and qdrant.port == 6333 and _shares_network(compose, service, "qdrant")
        otlp = urlsplit(env["CARAFE_TELEMETRY__OTLP_ENDPOINT"])
        assert otlp.hostname == "otel-collector" and _shares_network(compose, service, "otel-collector")
        collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
        receiver = collector["receivers"]["otlp"]["protocols"][env["CARAFE_TELEMETRY__OTLP_PROTOCOL"]]
        assert receiver["endpoint"].rsplit(":", 1)[1] == str(otlp.port)
    port = gw["CARAFE_SERVER__PORT"]
    assert any(p.rsplit(":", 1)[1] == port for p in svcs["gateway"]["ports"])
    assert gw["CARAFE_SERVER__HOST"] == "0.0.0.0"


def test_vllm_serves_runtime_loras_from_the_gateways_registry_and_is_private(compose: dict[str, Any]) -> None:
    svcs = compose["services"]
    vllm = svcs["vllm"]
    assert "enable-lora" in _flags(vllm)
    assert _env(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    registry = _env(svcs["gateway"])["CARAFE_ADAPTERS__REGISTRY__PATH"]
    # adapter paths go to vLLM as they are: the registry is at the same path in both
    assert _mounts(vllm)[registry] == _mounts(svcs["gateway"])[registry] == "carafe-registry"
    assert "ports" not in vllm, "vLLM's admin endpoints must not be published"
    for net in vllm["networks"]:
        assert compose["networks"][net].get("internal") is True
        members = {n for n, s in svcs.items() if net in s.get("networks", [])}
        assert members == {"vllm", "gateway"}, f"network {net} also reaches vLLM from {members - {'vllm', 'gateway'}}"
    assert "ports" not in svcs["qdrant"]


def test_collector_pipeline_reaches_jaeger(compose: dict[str, Any]) -> None:
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in collector[kind], f"pipeline uses undefined {kind[:-1]} {name}"
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
    assert jaeger.split(":")[0] == "jaeger" and _shares_network(compose, "otel-collector", "jaeger")


def test_dockerfile_builds_a_cpu_image_of_this_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"^CMD \[\"carafe\", \"serve\"\]", text, re.M)
    assert "EXPOSE 8000" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".carafe" in ignored and "carafe" not in ignored
    # the native int4 kernels build on the serving host: a compiler in the image, sources in the package
    assert re.search(r"apt-get install .*\bg\+\+", text)
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"csrc/*.cpp", "csrc/*.h"} <= set(package_data["carafe.adapters"])
