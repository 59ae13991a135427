"""The one `carafe.yaml`: each package's section composed, with env overrides.

Precedence, highest first: init kwargs, ``CARAFE_*`` environment variables
(nested with ``__``, e.g. ``CARAFE_SERVER__PORT=9000``), the YAML file, defaults.
The file is ``--config PATH``, else ``$CARAFE_CONFIG``, else ``./carafe.yaml`` if
present.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from carafe.adapters.config import AdaptersConfig
from carafe.gateway.config import AuthConfig, ServerConfig
from carafe.gateway.routing.config import RoutingConfig
from carafe.gateway.telemetry.config import TelemetryConfig
from carafe.guards.config import GuardsConfig
from carafe.indexer.config import IndexerConfig
from carafe.state.config import StateConfig
from carafe.tuning.config import TuningConfig


class CarafeConfig(BaseSettings):
    """Effective configuration of a Carafe process."""

    model_config = SettingsConfigDict(
        env_prefix="CARAFE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path(".carafe"), description="Where caches, the state database (SQLite), the registry and the index live"
    )
    models_cache: Path | None = Field(
        None, description="Where converted base models are cached; default <data_dir>/models"
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    adapters: AdaptersConfig = Field(default_factory=AdaptersConfig)
    indexer: IndexerConfig = Field(default_factory=IndexerConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    state: StateConfig = Field(default_factory=StateConfig)

    _yaml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _CONFIG_FILE.get("path")
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # Derived paths -------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.models_cache or self.data_dir / "models"

    @property
    def keys_file(self) -> Path:
        return self.auth.keys_file or self.data_dir / "keys.json"

    @property
    def registry_dir(self) -> Path:
        return self.adapters.registry.path or self.data_dir / "registry"


_CONFIG_FILE: dict[str, Path | None] = {}


def resolve_config_path(path: str | Path | None) -> Path | None:
    if path is not None:
        return Path(path)
    env = os.environ.get("CARAFE_CONFIG")
    if env:
        return Path(env)
    default = Path("carafe.yaml")
    return default if default.is_file() else None


def load_config(path: str | Path | None = None, **overrides: Any) -> CarafeConfig:
    """Load the effective config. A missing explicit file is an error."""
    from carafe.errors import InvalidInput

    resolved = resolve_config_path(path)
    if resolved is not None and not resolved.is_file():
        raise InvalidInput(f"config file not found: {resolved}", param="config")
    _CONFIG_FILE["path"] = resolved
    try:
        cfg = CarafeConfig(**overrides)
    finally:
        _CONFIG_FILE.pop("path", None)
    cfg._yaml_file = resolved
    return cfg
