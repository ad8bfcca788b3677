"""Together's fine-tuning API (https://api.together.xyz/v1): files, fine-tunes, events, checkpoints, price estimates
and adapter downloads over its own REST routes; inference through its OpenAI-compatible chat completions."""
