"""OpenAI's own shapes, for the routes that let code written against the OpenAI SDK point its ``base_url`` here.

Field names, types and enums follow OpenAI's published description (``openai-openapi.yml``): timestamps are Unix
seconds, lists carry ``object: "list"``, errors are ``{"error": {message, type, param, code}}``. Where we must say
more than OpenAI does (a job paused, the provider that runs it) we add fields; we never change or drop one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from api_schemas.common import RequestModel
from api_schemas.jobs import check_job_metadata

Auto = Literal["auto"]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


# Files ---------------------------------------------------------------------------------------------------------


class OpenAIFile(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = Field(
        description="`uploaded` while validation runs, `processed` when the file can train, `error` when it cannot "
        "(`status_details` names the first problems with their line numbers)."
    )
    status_details: str | None = None
    expires_at: int | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI's description types these as string / integer when present: absent, not null, when there is none.
        data = handler(self)
        for key in ("status_details", "expires_at"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class OpenAIFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class OpenAIFileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


# Fine-tuning ------------------------------------------------------------------------------------------------------


# OpenAI's bounds (its description); the multiplier's upper bound is ours: past 1000x any learning rate diverges.
Epochs = Annotated[int, Field(ge=1, le=50)]
BatchSize = Annotated[int, Field(ge=1, le=256)]
Multiplier = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]
Beta = Annotated[float, Field(gt=0, le=2, allow_inf_nan=False)]


class OpenAIHyperparameters(RequestModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n_epochs: Auto | Epochs | None = Field(default=None, description="'auto' or 1-50.")
    batch_size: Auto | BatchSize | None = Field(default=None, description="'auto' or 1-256.")
    learning_rate_multiplier: Auto | Multiplier | None = Field(default=None, description="'auto' or in (0, 1000].")


class OpenAIDpoHyperparameters(OpenAIHyperparameters):
    beta: Auto | Beta | None = Field(default=None, description="'auto' or in (0, 2].")


class OpenAISupervisedMethod(RequestModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: OpenAIHyperparameters | None = None


class OpenAIDpoMethod(RequestModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: OpenAIDpoHyperparameters | None = None


class OpenAIMethod(RequestModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: OpenAISupervisedMethod | None = None
    dpo: OpenAIDpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class OpenAIFineTuningJobCreate(RequestModel):
    """``POST /v1/fine_tuning/jobs`` as OpenAI documents it, plus ``provider`` (an extra body field, the SDK's
    ``extra_body``) to choose where it trains when the model name alone does not say."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=100)
    validation_file: str | None = Field(default=None, max_length=100)
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    hyperparameters: OpenAIHyperparameters | None = Field(default=None, description="Deprecated by OpenAI: `method`.")

    method: OpenAIMethod | None = None
    integrations: list[dict[str, Any]] | None = None
    provider: str | None = Field(default=None, max_length=32, description="Not OpenAI's: which provider trains.")

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # The job's own rule, checked here so it is answered as a 400 naming ``metadata`` before any translation.
        return None if v is None else check_job_metadata(v)


class OpenAIJobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class OpenAIFineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: OpenAIJobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    status: str = Field(
        description="validating_files, queued, running, succeeded, failed, cancelled, and paused (which OpenAI's "
        "enum lacks but its jobs report)."
    )
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    seed: int
    estimated_finish: int | None = None
    method: dict[str, Any]
    metadata: dict[str, str] | None = None
    provider: str = Field(description="Not OpenAI's: the provider that trains this job.")


class OpenAIFineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFineTuningJob]
    has_more: bool


class OpenAIFineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] = Field(default_factory=dict)


class OpenAIFineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFineTuningJobEvent]
    has_more: bool


class OpenAIFineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    step_number: int
    metrics: dict[str, float]
    fine_tuning_job_id: str


class OpenAIFineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFineTuningJobCheckpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


# Models -----------------------------------------------------------------------------------------------------------


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


# Inference ----------------------------------------------------------------------------------------------------------


class OpenAIStreamOptions(RequestModel):
    include_usage: bool | None = None


class _SamplingFields(RequestModel):
    # Fields beyond these are kept (``extra="allow"``): they are forwarded as given to a hosted provider, and a local
    # model refuses the ones it cannot honour by name instead of ignoring them.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    stop: str | list[str] | None = Field(default=None, description="Up to 4 sequences; the text ends before them.")
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: OpenAIStreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)


class OpenAIChatCompletionCreate(_SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)


class OpenAICompletionCreate(_SamplingFields):
    prompt: str | list[str] = Field(description="A prompt, or a list of prompts (one choice set each).")


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class OpenAIChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class OpenAIChatChoice(BaseModel):
    index: int
    message: OpenAIChatMessage
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
    logprobs: None = None


class OpenAIChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[OpenAIChatChoice]
    usage: OpenAIUsage


class OpenAITextChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "content_filter"]
    logprobs: None = None


class OpenAITextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[OpenAITextChoice]
    usage: OpenAIUsage
