"""Configuration: pydantic models of the YAML file, ${VAR} interpolation, and the run id.

Every key is declared here with a one-line description; an unknown key or a bad value is a
``ConfigError`` naming the key and the file. Nothing outside this module reads raw YAML.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from docmill.errors import ConfigError

DEFAULT_DB_PATH = Path(".docmill") / "docmill.db"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024**2,
               "g": 1e9, "gb": 1e9, "gib": 1024**3, "t": 1e12, "tb": 1e12, "tib": 1024**4}


def parse_size(value: int | float | str) -> int:
    """Turn ``100MB``, ``1.5 GiB`` or a plain number into bytes."""
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 100MB, 1GiB or a number of bytes)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "").lower()])


def real_path(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute and its symlinks resolved.

    ``os.path.realpath``, not ``Path.resolve()``: a symlink loop is left in the path for the caller's
    stat to report as a clear error (``resolve`` raises RuntimeError), and it costs one stat less.
    """
    return os.path.realpath(os.path.expanduser(path))


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class StorageConfig(_Section):
    """Where documents, chunks and the work queue live."""

    backend: Literal["sqlite", "postgresql"] = Field("sqlite", description="sqlite (one machine) or postgresql")
    path: Path = Field(DEFAULT_DB_PATH, description="SQLite file (backend: sqlite)")
    url: str | None = Field(None, description="postgresql://user:pass@host:port/db; overrides host/port/…")
    host: str | None = Field(None, description="PostgreSQL host (when no url)")
    port: int = Field(5432, description="PostgreSQL port")
    database: str | None = Field(None, description="PostgreSQL database name")
    user: str | None = Field(None, alias="username", description="PostgreSQL user (alias: username)")
    password: str | None = Field(None, description="PostgreSQL password; use ${VAR} to read it from the env")
    pool_size: int = Field(10, ge=2, description="connections this machine may open (checked against workers)")
    pool_timeout: float = Field(30.0, gt=0, description="seconds to wait for a connection before failing")
    pool_recycle: float = Field(3600.0, gt=0, description="seconds after which a connection is replaced")
    reconnect_timeout: float = Field(60.0, gt=0, description="seconds a lost PostgreSQL connection is retried "
                                     "(a failover) before the worker stops")

    @model_validator(mode="after")
    def _postgres_needs_location(self) -> StorageConfig:
        if self.backend == "postgresql" and not self.url and not self.host:
            raise ValueError("backend postgresql needs storage.url or storage.host")
        return self

    def database_url(self) -> str:
        """The store as one URL: ``sqlite:///path`` or ``postgresql://…``."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        if self.url:
            return self.url
        auth = quote(self.user or "", safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(("postgresql", netloc, "/" + (self.database or "postgres"), "", ""))


class SourceConfig(_Section):
    """One place documents come from."""

    name: str = Field(description="unique name of this source (shown in status and search)")
    type: Literal["local", "file"] = Field("local", description="local (alias: file): a folder, file or glob")
    base_path: str = Field(alias="path", description="folder, single file or glob pattern (alias: path)")
    include: list[str] = Field(default_factory=lambda: ["**/*"], description="glob patterns to take")
    exclude: list[str] = Field(default_factory=list, description="glob patterns to skip")
    include_hidden: bool = Field(False, description="also take dot-files and dot-folders (never .git)")
    follow_symlinks: bool = Field(True, description="follow symbolic links (loops are detected)")
    max_file_size: int = Field(100_000_000, description="larger files are dead-lettered (e.g. 100MB)")

    @field_validator("max_file_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)

    def identity(self) -> dict[str, Any]:
        """The part of this source that decides which documents exist (goes into the run id)."""
        return {"name": self.name, "type": "local", "path": real_path(self.base_path),
                "include": self.include, "exclude": self.exclude, "hidden": self.include_hidden,
                "max_file_size": self.max_file_size}


class EmbeddingConfig(_Section):
    """Which model turns chunks into vectors, and how fast it may be called."""

    provider: Literal["local", "fastembed", "sentence_transformers", "openai"] = Field(
        "local", description="local = packaged all-MiniLM-L6-v2 ONNX, works offline")
    model: str = Field("all-MiniLM-L6-v2", description="model name for the provider")
    batch_size: int = Field(8, ge=1, le=2048, description="chunks per HTTP request or model run (local model on "
                            "onnxruntime: at most, and fewer where they would pass 256 tokens)")
    max_sequence_length: int = Field(256, ge=16, le=8192, description="tokens the model sees; longer is cut")
    dimensions: int | None = Field(None, ge=1, description="vector size; taken from the model when unset")
    threads: int | None = Field(None, ge=1, description="CPU threads per worker for local models")
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible endpoint (openai)")
    api_key: str | None = Field(None, description="API key (openai); use ${OPENAI_API_KEY}")
    timeout: float = Field(60.0, gt=0, description="seconds per HTTP request (openai)")
    requests_per_minute: int | None = Field(None, ge=1, description="cluster-wide request limit")
    tokens_per_minute: int | None = Field(None, ge=1, description="cluster-wide token limit")
    max_concurrency: int = Field(4, ge=1, description="HTTP requests in flight per worker")
    max_batch_wait: float = Field(100.0, ge=0, description="ms to wait for a batch to fill")
    api: Literal["auto", "openai", "azure", "ollama"] = Field(
        "auto", description="HTTP dialect (openai): auto guesses from base_url (Azure host, Ollama /api)")
    rate_limit_burst: float = Field(5.0, gt=0, le=60, description="seconds of the rate limit one burst may use")
    quantize: bool = Field(False, description="local: int8 arithmetic, ~1.6x faster on CPU; vectors ~0.99 cosine "
                           "to the float model's, so a search may rank chunks differently")
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="local: the engine running the model; openvino needs the openvino extra "
        "(x86-64, ARM64) and pays off with precision bfloat16")
    precision: Literal["float32", "bfloat16"] = Field(
        "float32", description="local on OpenVINO: bfloat16 is ~1.4x faster end to end on CPUs with bfloat16 "
        "arithmetic, vectors within cosine 0.9999 of float32's")

    @model_validator(mode="after")
    def _local_only(self) -> EmbeddingConfig:
        for key in ("quantize", "runtime", "precision"):
            if getattr(self, key) != type(self).model_fields[key].default and self.provider != "local":
                raise ValueError(f"embedding.{key} applies to provider 'local' only, not {self.provider!r}")
        if self.quantize and self.runtime == "openvino":
            # Measured: OpenVINO runs onnxruntime's int8 graph at 0.57x the float model's speed.
            raise ValueError("embedding.quantize runs on onnxruntime; remove embedding.runtime openvino")
        if self.precision == "bfloat16" and self.runtime != "openvino":
            raise ValueError("embedding.precision bfloat16 needs embedding.runtime openvino "
                             "(pip install 'docmill[openvino]')")
        return self

    def identity(self) -> dict[str, Any]:
        """The settings that change the vectors (go into the run id)."""
        identity: dict[str, Any] = {"provider": self.provider, "model": self.model, "dimensions": self.dimensions,
                                    "max_sequence_length": self.max_sequence_length}
        if self.quantize:  # only when set: the float model's runs keep the ids they always had
            identity["quantize"] = True
        return identity


class ChunkingConfig(_Section):
    """How parsed text is split into chunks."""

    max_tokens: int = Field(200, ge=16, alias="chunk_size", description="tokens per chunk (alias: chunk_size)")
    overlap: int = Field(32, ge=0, alias="chunk_overlap", description="tokens shared by neighbouring chunks")
    prepend_headings: bool = Field(True, description="embed 'Heading > Sub: text' rather than the bare text")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap >= self.max_tokens:
            raise ValueError(f"chunking.overlap ({self.overlap}) must be below max_tokens ({self.max_tokens})")
        return self


class WorkersConfig(_Section):
    """How many processes work, and how they hold and retry documents."""

    max_workers: int = Field(1, ge=1, le=256, description="worker processes this command starts")
    worker_id: str | None = Field(None, description="worker name prefix; the process id is appended")
    claim_batch_size: int = Field(8, ge=1, le=1000, description="most documents claimed in one statement "
                                  "(fewer when they would pass the chunk budget)")
    claim_timeout: float = Field(300.0, gt=0, alias="worker_timeout", description="lease length, seconds")
    heartbeat_interval: float = Field(30.0, gt=0, description="seconds between lease extensions")
    poll_interval: float = Field(5.0, gt=0, description="seconds an idle worker waits before asking again")
    max_retries: int = Field(3, ge=1, description="claims a document gets before it is dead-lettered")
    retry_delay: float = Field(60.0, ge=0, description="seconds before the first retry")
    max_retry_delay: float = Field(3600.0, ge=0, description="cap on the retry delay, seconds")
    exponential_backoff: bool = Field(True, description="double the delay on each retry (with jitter)")
    preset: Literal["local", "standard", "high_throughput"] | None = Field(
        None, description="sets batch sizes, concurrency, claims and rate-limit bursts; explicit keys win")
    prepare_threads: int = Field(2, ge=1, le=64, description="threads reading, parsing and chunking per worker")
    max_inflight_chunks: int = Field(512, ge=1, description="chunks a worker holds before it stops claiming")
    circuit_breaker_threshold: int = Field(5, ge=0, description="documents failing in a row (not for their own "
                                           "fault) before a worker pauses with backoff; 0 = never")
    cleanup_completed_jobs: bool = Field(True, description="drop attempts/events/worker rows of long-finished runs")
    cleanup_after_hours: float = Field(24.0, gt=0, description="hours a run stays complete before that cleanup")

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> WorkersConfig:
        if self.heartbeat_interval * 2 > self.claim_timeout:
            raise ValueError(f"workers.heartbeat_interval ({self.heartbeat_interval}s) must be at most half "
                             f"of claim_timeout ({self.claim_timeout}s), or leases lapse between beats")
        return self


class WorkQueueConfig(_Section):
    """The seeds' ``work_queue`` section: another place for the queue keys of ``workers``."""

    claim_timeout: float | None = Field(None, gt=0, description="same as workers.claim_timeout")
    heartbeat_interval: float | None = Field(None, gt=0, description="same as workers.heartbeat_interval")
    max_retries: int | None = Field(None, ge=1, description="same as workers.max_retries")


class MonitoringConfig(_Section):
    """Metrics, health endpoints and alert thresholds."""

    enabled: bool = Field(False, description="serve /metrics and /healthz while ingesting")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port (0 = any)")
    health_check_port: int = Field(8080, ge=0, le=65535, description="/healthz and /readyz port (0 = any)")
    max_queue_depth: int = Field(10_000, ge=1, description="alert when pending documents exceed this")
    max_processing_time: float = Field(600.0, gt=0, description="alert when a document takes longer, seconds")
    min_throughput: float = Field(0.0, ge=0, description="alert when docs/s over 5 minutes falls below this")
    event_retention_days: float = Field(7.0, gt=0, description="days of document events kept for docmill trace")


#: ``workers.preset``: what each preset sets (only keys absent from the config take these values).
#: ``embedding.batch_size`` is applied to HTTP providers only (local CPU models keep their measured best).
PRESETS: dict[str, dict[str, Any]] = {
    # One laptop: few threads, small claims and batches, gentle bursts against a remote API.
    "local": {"workers.claim_batch_size": 4, "workers.prepare_threads": 1, "workers.max_inflight_chunks": 256,
              "embedding.batch_size": 16, "embedding.max_concurrency": 2, "embedding.max_batch_wait": 50.0,
              "embedding.rate_limit_burst": 2.0},
    # A server: the defaults most deployments want.
    "standard": {"workers.claim_batch_size": 8, "workers.prepare_threads": 2, "workers.max_inflight_chunks": 512,
                 "embedding.batch_size": 64, "embedding.max_concurrency": 4, "embedding.max_batch_wait": 100.0,
                 "embedding.rate_limit_burst": 5.0},
    # Many machines against a large API quota: big claims and batches, many requests in flight.
    "high_throughput": {"workers.claim_batch_size": 32, "workers.prepare_threads": 4,
                        "workers.max_inflight_chunks": 2048, "embedding.batch_size": 128,
                        "embedding.max_concurrency": 16, "embedding.max_batch_wait": 200.0,
                        "embedding.rate_limit_burst": 10.0},
}


class LoggingConfig(_Section):
    """Log level and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="log threshold")
    structured: bool = Field(False, description="one JSON object per line instead of readable text")
    include_worker_id: bool = Field(True, description="add the worker id to each line")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Config(_Section):
    """The whole configuration. ``Config()`` works with no file; ``Config("x.yaml")`` loads one."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    content_sources: list[SourceConfig] = Field(default_factory=list)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    work_queue: WorkQueueConfig = Field(default_factory=WorkQueueConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def __init__(self, path: str | Path | None = None, /, **data: Any) -> None:
        if path is not None:
            data = {**_read_yaml(Path(path)), **data}
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, Path(path), self.__class__)) from None
        else:
            super().__init__(**data)

    @model_validator(mode="after")
    def _apply_preset(self) -> Config:
        # Only keys the user did not set take the preset's value: explicit keys always win.
        preset = PRESETS.get(self.workers.preset or "")
        if not preset:
            return self
        for dotted, value in preset.items():
            section_name, key = dotted.split(".")
            if dotted == "embedding.batch_size" and self.embedding.provider != "openai":
                continue  # CPU models keep their measured best batch
            section = getattr(self, section_name)
            if key not in section.model_fields_set:
                setattr(section, key, value)
        return self

    @model_validator(mode="after")
    def _merge_work_queue(self) -> Config:
        for key in ("claim_timeout", "heartbeat_interval", "max_retries"):
            value = getattr(self.work_queue, key)
            if value is not None:
                setattr(self.workers, key, value)
        names = [s.name for s in self.content_sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"content_sources: duplicate source name(s) {', '.join(duplicates)}")
        return self

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Load a YAML file (or the defaults when ``path`` is None)."""
        return cls(path) if path is not None else cls()

    def run_id(self) -> str:
        """Hash of the settings that change the output; worker counts and ports do not count."""
        identity = {
            "sources": sorted((s.identity() for s in self.content_sources), key=lambda s: s["name"]),
            "chunking": self.chunking.model_dump(),
            "embedding": self.embedding.identity(),
        }
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def worker_name(self) -> str:
        """This process's worker id: the configured prefix (default the host name) and the pid."""
        return f"{self.workers.worker_id or socket.gethostname()}-{os.getpid()}"

    def redacted(self) -> dict[str, Any]:
        """The resolved config as a dict, with passwords and API keys hidden."""
        data = self.model_dump(mode="json", by_alias=False)
        if data["storage"].get("password"):
            data["storage"]["password"] = "***"
        if data["storage"].get("url"):
            data["storage"]["url"] = redact_url(data["storage"]["url"])
        if data["embedding"].get("api_key"):
            data["embedding"]["api_key"] = "***"
        return data


def redact_url(url: str) -> str:
    """Hide the password in a database URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def interpolate(value: Any, where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if name == "HOSTNAME":  # shells set it without exporting it
            return socket.gethostname()
        raise ConfigError(f"{where}: environment variable {name} is not set "
                          f"(set it, or write ${{{name}:-default}})")

    return _VAR.sub(replace, value)


# libyaml's parser when PyYAML was built with it (its wheels are): ten times faster than the pure one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(raw).__name__}")
    try:
        return interpolate(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, to suggest a correction for a typo."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", None)
        current = args[0] if args else annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    keys: list[str] = []
    for name, field in current.model_fields.items():
        keys.append(name)
        if field.alias:
            keys.append(field.alias)
    return keys


def _clip(text: str, limit: int) -> str:
    """``text``, or its start and end around "…" when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit * 2 // 3]}…({len(text)} characters)…{text[-limit // 4:]}"


def format_validation_error(exc: ValidationError, path: Path | None, model: type[BaseModel]) -> str:
    """One readable line per problem: ``file: section.key: what is wrong``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, loc)
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = f"unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
                msg += f" (got {_clip(repr(err['input']), 80)})"
        # A key or value may be megabytes long (a pasted file): name it, never echo it whole.
        lines.append(_clip(f"{_clip(where, 120) or 'config'}: {msg}", 400))
    prefix = f"{path}: " if path else ""
    return prefix + ("invalid configuration:\n  " if len(lines) > 1 else "") + "\n  ".join(lines)
