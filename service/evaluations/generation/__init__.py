"""Generation through any OpenAI-compatible chat endpoint: concurrent, rate limited, retried, resumable by key."""

from service.evaluations.generation.engine import JudgeChatClient, JudgeRequestError, generate_all, generate_all_sync
from service.evaluations.generation.ratelimit import RateLimiter
from service.evaluations.generation.runner import ChatRunner, FatalGenerationError, estimate_tokens
from service.evaluations.generation.types import ClientConfig, GenerationStats, GenRequest, GenResult, RateLimits

__all__ = [
    "ChatRunner",
    "ClientConfig",
    "FatalGenerationError",
    "GenRequest",
    "GenResult",
    "GenerationStats",
    "JudgeChatClient",
    "JudgeRequestError",
    "RateLimiter",
    "RateLimits",
    "estimate_tokens",
    "generate_all",
    "generate_all_sync",
]
