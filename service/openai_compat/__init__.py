"""The OpenAI-shaped routes (files, fine-tuning jobs, models, chat and text completions): a translation layer onto
the service's own domain, so code written for the OpenAI SDK works by changing ``base_url`` and ``api_key``. No logic
of its own lives here: shapes, parameter names and the error format only."""
