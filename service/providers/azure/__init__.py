"""Azure OpenAI's v1 fine-tuning API: OpenAI's surface under ``{resource endpoint}/openai/v1/`` with an ``api-key``
header, so the adapter is the ``openai`` one parameterised (``provider``), plus what Azure does differently: its names for
fine-tunes (``model_names``; its models, prices and retirement dates are in ``service/pricing/azure_price_table.json``),
its file rules (``files``), and deployments, without which Azure serves no fine-tune (``deployment``).

Sources (read December 2026; Microsoft Learn, "Azure OpenAI in Azure AI Foundry Models"):
- v1 API: learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle (``{endpoint}/openai/v1/``, no
  ``api-version``, ``api-key`` header or an Entra bearer) and the REST reference for files and fine-tuning jobs
  (events, checkpoints, pause, resume, cancel; ``seed``, ``suffix``, ``trainingType``).
- How-to "Customize a model with fine-tuning": training data as JSONL encoded in UTF-8 with a byte-order mark, files
  under 512 MB; training tiers Standard, Global and Developer; a fine-tune is called only through a deployment.
- "Model deprecations and retirements", section "Fine-tuned models": training follows the base model's retirement;
  deployments of fine-tunes retire a year after training does (about 2027-04 and 2027-10 for today's models).
- "Deploy a fine-tuned model": deployments are made on the control plane (ARM: ``az cognitiveservices account
  deployment create``, an Entra identity with deployments/write), which a resource's api-key cannot do.

Kept free of imports here, like ``service.providers.openai``.
"""
