"""Issue 29 L5 and L11: `carafe config show` hides every secret, and an unknown key inside any
section is refused with its full path (not silently ignored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carafe.cli.main import app
from carafe.config import load_config
from carafe.errors import InvalidInput

SECRETS = {
    "otlp": "Bearer otlp-SECRET-1",
    "qdrant": "qdrant-PASS-2",
    "salt": "salt-SECRET-3",
    "query": "query-TOKEN-4",
    "vllm": "vllm-KEY-5",
}


def test_config_show_hides_headers_url_credentials_and_salt(tmp_path: Path) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text(
        "telemetry:\n"
        f"  otlp_headers: {{authorization: '{SECRETS['otlp']}', x-tenant: acme}}\n"
        "indexer:\n"
        "  qdrant:\n"
        f"    url: 'https://carafe:{SECRETS['qdrant']}@qdrant.internal:6333/?api_key={SECRETS['query']}&x=1'\n"
        "guards:\n"
        f"  pii_hash_salt: {SECRETS['salt']}\n"
        "adapters:\n"
        "  engine:\n"
        f"    vllm_api_key: {SECRETS['vllm']}\n"
    )
    out = CliRunner().invoke(app, ["config", "show", "--config", str(f), "--json"])
    assert out.exit_code == 0, out.output
    for secret in SECRETS.values():
        assert secret not in out.output
    data = json.loads(out.output)
    assert data["indexer"]["qdrant"]["url"] == "https://carafe:**********@qdrant.internal:6333/?api_key=**********&x=1"
    assert data["telemetry"]["otlp_headers"] == {"authorization": "**********", "x-tenant": "**********"}
    assert data["guards"]["pii_hash_salt"] == "**********"
    assert data["server"]["max_tokens_limit"] == 4096  # numbers named "token" are not secrets


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("server:\n  prot: 9000\n", "server.prot"),
        ("auth:\n  oidc: {isuer: https://idp}\n", "auth.oidc.isuer"),
        ("adapters:\n  engine:\n    quantise: int4\n", "adapters.engine.quantise"),
        ("indexer:\n  sources:\n    - {name: a, path: /tmp, acl: public}\n", "indexer.sources.0.acl"),
        ("guards:\n  policies:\n    strict:\n      input:\n        pii: {action: block, treshold: 0.2}\n", "treshold"),
        ("telemetry:\n  sampling: 0.5\n", "telemetry.sampling"),
        ("routing:\n  retreival: {enabled: true}\n", "routing.retreival"),
        ("tuning:\n  teacher: {modle: x}\n", "tuning.teacher.modle"),
    ],
)
def test_unknown_key_inside_a_section_is_refused_with_its_path(tmp_path: Path, yaml_text: str, path: str) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text(yaml_text)
    with pytest.raises(InvalidInput) as caught:
        load_config(f)
    assert path in caught.value.message and "unknown key" in caught.value.message


def test_cli_names_the_unknown_key(tmp_path: Path) -> None:
    f = tmp_path / "carafe.yaml"
    f.write_text("server:\n  prot: 9000\n")
    out = CliRunner().invoke(app, ["config", "show", "--config", str(f)])
    assert out.exit_code == 2
    assert "server.prot: unknown key" in out.output


def test_data_dir_and_trace_file_are_private(tmp_path: Path) -> None:
    """Issue 29 L6: traces.jsonl (users, documents) and the data_dir were 0644 / 0755."""
    from carafe.gateway.app import create_app
    from carafe.gateway.telemetry.config import TelemetryConfig
    from carafe.gateway.telemetry.setup import setup_telemetry

    fresh, old = tmp_path / "fresh", tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    (old / "traces").mkdir()
    stale = old / "traces" / "traces.jsonl"
    stale.write_text("")
    stale.chmod(0o644)
    for data in (fresh, old):
        create_app(load_config(None, data_dir=data))
        assert data.stat().st_mode & 0o777 == 0o700
        tel = setup_telemetry(TelemetryConfig(schedule_delay_ms=10), data_dir=data)
        try:
            from opentelemetry import trace

            with trace.get_tracer("t").start_as_current_span("x"):
                pass
            assert tel.force_flush()
        finally:
            tel.shutdown()
        trace_file = data / "traces" / "traces.jsonl"
        assert trace_file.stat().st_mode & 0o777 == 0o600
    assert (fresh / "traces").stat().st_mode & 0o777 == 0o700
