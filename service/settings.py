"""Runtime configuration, read from the environment (prefix ``FINETUNE_``) and an optional ``.env`` file.

The defaults are the embedded mode: a SQLite file and an in-process broker under ``data_dir``, so a fresh machine needs
no other service. Scaling out means setting ``FINETUNE_DATABASE_URL`` and ``FINETUNE_BROKER_URL``.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The host part only keeps kombu from warning "No hostname was supplied" at every start of the embedded mode.
EMBEDDED_BROKER = "memory://localhost/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINETUNE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"), description="Where datasets, models, the SQLite file and secrets live."
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: sqlite file in data_dir.")
    broker_url: str = Field(default=EMBEDDED_BROKER, description="Celery broker; memory:// runs everything in-process.")
    redis_url: str | None = Field(default=None, description="Redis for rate limits and caches; default: none.")
    secret_key: SecretStr | None = Field(
        default=None, description="Server secret for API key hashing and credential encryption; default: a file."
    )
    previous_secret_keys: list[SecretStr] = Field(
        default_factory=list, description="Retired server secrets that still decrypt stored secrets (rotation)."
    )
    admin_key: SecretStr | None = Field(default=None, description="Bearer key for admin routes (projects).")

    openai_api_key: SecretStr | None = Field(default=None, description="Default OpenAI key for projects without one.")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL (gateways, emulator).")
    openai_webhook_secret: SecretStr | None = Field(default=None, description="Secret of OpenAI's webhooks to us.")
    azure_openai_endpoint: str | None = Field(
        default=None, description="Azure OpenAI resource endpoint (https://<resource>.openai.azure.com) for projects."
    )
    azure_openai_api_key: SecretStr | None = Field(default=None, description="Default Azure OpenAI key for projects.")
    together_api_key: SecretStr | None = Field(default=None, description="Default Together key for projects.")
    together_base_url: str = Field(default="https://api.together.xyz/v1", description="Together API base URL.")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False

    max_upload_bytes: int = Field(default=8 * 1024**3, description="Dataset upload limit (413 above).")
    inline_validation_bytes: int = Field(
        default=256 * 1024, description="Datasets up to this size are validated in the request; larger in the worker."
    )
    max_body_bytes: int = Field(default=1024**2, description="Request body limit except dataset uploads (413 above).")

    rate_limit_per_s: float = Field(default=50.0, description="Requests per second per API key; 0 turns limits off.")
    rate_limit_burst: int = Field(default=200, description="Requests an API key may send at once before the rate.")
    anonymous_rate_limit_per_s: float = Field(default=2.0, description="Per client address, without a valid key.")
    anonymous_rate_limit_burst: int = Field(default=30, description="Burst per client address without a valid key.")
    metrics_public: bool = Field(default=False, description="Serve /metrics without the admin key.")

    sweep_interval_s: float = Field(default=2.0, description="How often the sweeper looks for due and stuck rows.")
    requeue_after_s: float = Field(default=60.0, description="A due row enqueued but not picked up is re-sent after.")
    lease_s: float = Field(default=300.0, description="How long a worker owns a row before the sweeper reclaims it.")
    max_step_attempts: int = Field(
        default=8,
        ge=1,
        description="Failed attempts in a row of one step (any work kind) before its object is failed (step_failed).",
    )
    task_time_limit_s: int = Field(default=3600, description="Hard time limit of one task.")
    train_time_limit_s: int = Field(default=6 * 3600, description="Hard time limit of one local training task.")
    worker_concurrency: int = 2

    default_provider: str = Field(default="local", description="Provider used when a job names none.")
    poll_scale: float = Field(default=1.0, description="Multiplies provider polling delays (tests shrink them).")
    poll_min_s: float = Field(default=1.0, description="Shortest delay between two polls of one job.")
    poll_max_s: float = Field(default=300.0, description="Longest delay between two polls of one job.")

    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs / hosts (*.suffix allowed) that user-given URLs (webhooks, evaluation endpoints, judges, "
        "provider base URLs) may reach despite the SSRF guard; separated by ',' or as a JSON list.",
    )
    outbound_allow_http: bool = Field(default=False, description="Allow http:// in user-given URLs (development).")
    # The names these had when only webhooks were guarded; still read, and merged with the outbound_* values.
    webhook_allow_http: bool = Field(default=False, description="Old name of outbound_allow_http (still read).")
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Old name of outbound_allowlist (still read, merged with it)."
    )
    webhook_timeout_s: float = 15.0
    webhook_connect_timeout_s: float = 5.0
    webhook_dispatch_concurrency: int = Field(default=64, ge=1, description="Requests in flight per dispatcher.")
    webhook_endpoint_concurrency: int = Field(default=2, ge=1, description="Of those, at most this many per endpoint.")
    webhook_host_concurrency: int = Field(default=8, ge=1, description="And at most this many per receiving host.")
    webhook_dispatch_batch: int = Field(
        default=1000, ge=1, description="Deliveries one dispatch task sends before handing its worker thread back."
    )

    hf_offline: bool = Field(
        default=True, description="Load base models only from local files (no Hugging Face Hub requests)."
    )
    local_model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders whose models (transformers folders, .gguf files) every project may name as a local base "
        "model, by absolute path or by path under the folder; separated by ':' or as a JSON list. Nothing else on the "
        "server's disk is reachable.",
    )
    inference_url: str | None = Field(
        default=None,
        description="Base URL of the `finetune inference` role (e.g. http://gpu-1:8001): the API and workers send local "
        "inference there instead of loading models themselves. Unset: each process runs its own runtime.",
    )
    inference_host: str = Field(default="127.0.0.1", description="Bind address of the `finetune inference` role.")
    inference_port: int = Field(default=8001, description="Port of the `finetune inference` role.")
    inference_max_batch_size: int = Field(
        default=32, ge=1, description="Sequences the inference runtime decodes together in one batch (per base model)."
    )
    inference_gpu_max_batch_size: int = Field(
        default=256,
        ge=1,
        description="On a GPU, the most sequences one batch decodes; below it the batch is sized from free GPU memory "
        "(each sequence's KV cache for its prompt and max_tokens).",
    )
    inference_backend: Literal["auto", "transformers", "vllm"] = Field(
        default="auto",
        description="What generates for local models: vllm (needs the vllm package and a GPU), transformers (any "
        "device), or auto: vllm when both are present, else transformers.",
    )
    inference_max_queued: int = Field(
        default=256, ge=1, description="Inference requests waiting for a batch slot; more are refused (429, retry-after)."
    )
    inference_max_tokens: int = Field(
        default=4096, ge=1, description="Most tokens one inference request may ask to generate (per choice)."
    )
    inference_memory_budget_mb: int = Field(
        default=8192, ge=1, description="Memory for resident base models and LoRA adapters; least recently used go first."
    )
    inference_request_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest an inference request may queue and generate before it is ended."
    )

    db_pool_size: int = Field(default=10, ge=1, description="Database connections each process keeps open.")
    db_max_overflow: int = Field(default=20, ge=0, description="Extra connections a process may open under load.")
    db_pool_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a request waits for a free connection before a 503."
    )
    outbound_per_project: int = Field(
        default=4, ge=1, description="Provider calls one project may have in flight while the API answers it (429 above)."
    )
    outbound_concurrency: int = Field(
        default=16, ge=1, description="Provider calls all projects together may have in flight in the API (503 above)."
    )
    outbound_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of a provider call made while the API answers a request."
    )

    price_table_path: Path | None = Field(default=None, description="Override the bundled versioned price table.")

    ui_session_ttl_s: int = Field(
        default=43200, ge=60, le=30 * 86400, description="How long a web UI sign-in lasts before the key is asked again."
    )

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 16:
            raise ValueError("FINETUNE_SECRET_KEY must be at least 16 bytes")
        return v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("local_model_dirs", mode="before")
    @classmethod
    def _path_list(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return v

    @field_validator("local_model_dirs")
    @classmethod
    def _absolute_dirs(cls, v: list[Path]) -> list[Path]:
        # Resolved once, so containment checks compare real paths (symlinks and '..' already followed).
        return [p.expanduser().resolve() for p in v]

    @field_validator("outbound_allowlist", "webhook_allowlist", mode="before")
    @classmethod
    def _host_list(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @field_validator("outbound_allowlist", "webhook_allowlist")
    @classmethod
    def _valid_entries(cls, v: list[str]) -> list[str]:
        from service.net.policy import OutboundPolicy

        OutboundPolicy.from_allowlist(v)  # a malformed entry stops the server at start, naming the entry
        return v

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # psycopg 3 is the driver we ship; accept the usual spellings.
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{self.data_dir / 'finetune.db'}"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def server_secret(self) -> bytes:
        """The server secret; generated once into the data directory when not configured."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            try:
                # Link instead of rename so two processes starting at once agree on one secret.
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return path.read_text().strip().encode()


@lru_cache
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
