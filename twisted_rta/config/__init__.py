"""The daemon's configuration: YAML -> frozen attrs Config; every error names its key path.

``parsers`` parse one value, ``schema`` declares the sections and keys (and which a reload may
change), ``loading`` builds a Config from a file or mapping, ``reloadable`` derives what a reload
applies, ``summary`` flattens it for the log.
"""

from twisted_rta.config.loading import (
    ConfigErrors,
    config_from_mapping,
    data_directory,
    default_node_id,
    load_config,
    store_url,
)
from twisted_rta.config.metric_rules import rules_of
from twisted_rta.config.parsers import (
    ConfigError,
    Parser,
    boolean,
    byte_size,
    choice,
    duration,
    integer,
    network,
    number,
    optional,
    parse_duration,
    string_list,
    text,
)
from twisted_rta.config.reloadable import merge_reloadable, reloadable_keys
from twisted_rta.config.schema import (
    DEFAULT_RESOLUTIONS,
    SCOPES,
    ApiKeyConfig,
    AuthConfig,
    Config,
    CorsConfig,
    IngestCorsConfig,
    IngestRateConfig,
    JournalConfig,
    LimitsConfig,
    LoggingConfig,
    MetricsConfig,
    ProcessingConfig,
    QueryCorsConfig,
    RateLimitsConfig,
    ReadRateConfig,
    ServerConfig,
    StoreConfig,
    WindowsConfig,
)
from twisted_rta.config.summary import summary

__all__ = [
    "DEFAULT_RESOLUTIONS",
    "SCOPES",
    "ApiKeyConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "CorsConfig",
    "IngestCorsConfig",
    "IngestRateConfig",
    "JournalConfig",
    "LimitsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "Parser",
    "ProcessingConfig",
    "QueryCorsConfig",
    "RateLimitsConfig",
    "ReadRateConfig",
    "ServerConfig",
    "StoreConfig",
    "WindowsConfig",
    "boolean",
    "byte_size",
    "choice",
    "config_from_mapping",
    "data_directory",
    "default_node_id",
    "duration",
    "integer",
    "load_config",
    "merge_reloadable",
    "network",
    "number",
    "optional",
    "parse_duration",
    "reloadable_keys",
    "rules_of",
    "store_url",
    "string_list",
    "summary",
    "text",
]
