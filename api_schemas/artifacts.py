"""What a job produced that can be downloaded (a local job's LoRA adapter, merged model, checkpoints), and the exports
of a local fine-tune built on request (vLLM/SGLang adapter, Ollama bundle, merged model)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from api_schemas.common import RequestModel
from api_schemas.work import LastError


class ArtifactKind(StrEnum):
    adapter = "adapter"
    merged_model = "merged_model"
    checkpoint = "checkpoint"
    vllm_adapter = "vllm_adapter"
    ollama_bundle = "ollama_bundle"
    gguf_model = "gguf_model"


class ArtifactOut(BaseModel):
    object: str = "job.artifact"
    name: str = Field(description="Unique within the job; the last segment of the download URL.")
    kind: ArtifactKind = Field(
        description="adapter: PEFT LoRA adapter (safetensors) with the tokenizer; merged_model: the base model with "
        "the adapter merged in (safetensors, config, tokenizer); checkpoint: a resume point (adapter, optimizer, RNG); "
        "vllm_adapter: the adapter as vLLM and SGLang load it, with the base weights when the base is not a Hugging "
        "Face id; ollama_bundle: a Modelfile with the base and the adapter for `ollama create`; gguf_model: a GGUF "
        "base with the adapter merged in (model.gguf and a Modelfile) for llama.cpp and Ollama."
    )
    size_bytes: int = Field(description="Exact length of the download.")
    sha256: str = Field(description="SHA-256 of the download (also its ETag).")
    content_type: str = Field(description="A folder is sent as a tar archive whose top folder is the artifact's name.")
    filename: str = Field(description="File name given in the download's Content-Disposition.")
    download_url: str = Field(description="Path of the download, relative to the service's base URL.")
    created_at: datetime


class ExportFormat(StrEnum):
    vllm = "vllm"
    ollama = "ollama"
    merged = "merged"
    gguf = "gguf"


class ExportState(StrEnum):
    not_started = "not_started"
    building = "building"
    ready = "ready"
    failed = "failed"


class ExportCreate(RequestModel):
    format: ExportFormat = Field(
        strict=False,
        description="vllm: the LoRA adapter for `vllm serve --lora-modules` and SGLang's `--lora-paths`; ollama: a "
        "Modelfile bundle for `ollama create`; merged: the base with the adapter merged in (a full model folder); "
        "gguf: for a fine-tune of a GGUF base, that file with the adapter merged in (other bases: 409).",
    )


class ExportOut(BaseModel):
    object: str = "job.export"
    job_id: str
    format: ExportFormat
    status: ExportState = Field(
        description="not_started, building (POST started it; poll this resource), ready (download `artifact`), or "
        "failed (`last_error` says why; POST again to retry)."
    )
    model_name: str = Field(
        description="The name the export serves the fine-tune under: its OpenAI-format `ft:` name for vLLM and "
        "SGLang, the same name made valid for Ollama (`model:tag`) in the Ollama bundle."
    )
    artifact: ArtifactOut | None = Field(default=None, description="The download, once ready.")
    commands: list[str] = Field(
        default_factory=list, description="Shell commands that serve or load the download, run where it was saved."
    )
    last_error: LastError | None = None
