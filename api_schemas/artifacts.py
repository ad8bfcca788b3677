"""What a job produced that can be downloaded (a local job's LoRA adapter, merged model, checkpoints)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class ArtifactKind(StrEnum):
    adapter = "adapter"
    merged_model = "merged_model"
    checkpoint = "checkpoint"


class ArtifactOut(BaseModel):
    object: str = "job.artifact"
    name: str = Field(description="Unique within the job; the last segment of the download URL.")
    kind: ArtifactKind = Field(
        description="adapter: PEFT LoRA adapter (safetensors) with the tokenizer; merged_model: the base model with "
        "the adapter merged in (safetensors, config, tokenizer); checkpoint: a resume point (adapter, optimizer, RNG)."
    )
    size_bytes: int = Field(description="Exact length of the download.")
    sha256: str = Field(description="SHA-256 of the download (also its ETag).")
    content_type: str = Field(description="A folder is sent as a tar archive whose top folder is the artifact's name.")
    filename: str = Field(description="File name given in the download's Content-Disposition.")
    download_url: str = Field(description="Path of the download, relative to the service's base URL.")
    created_at: datetime
