"""Generation through a provider's Batch API (OpenAI's ``/v1/batches``): about half the price, results within 24 h.

The caller is a database-backed work item that may be killed and re-run at any point, so the work is cut into steps
that each make at most a few provider calls and return a ``BatchState`` (JSON) for the caller to persist:

``split_requests`` (plan the parts) -> ``submit`` (upload the JSONL input, create the batch) -> ``poll`` (one GET,
repeated until ``state.done``) -> ``collect`` (download the output and error files, one ``BatchResult`` per request).
``cancel`` stops a batch; its finished requests stay collectable.

Crash safety: every batch carries our ``tag`` in its ``metadata`` and its input file a name derived from the tag and
the content. Before creating anything, ``submit`` looks for a batch with the tag (and for an uploaded file with that
name), so a re-run after a crash between "the provider created it" and "we persisted it" adopts the existing batch
instead of paying for a second one. A tag therefore names one attempt: to try again after a failed batch, use a new
tag (e.g. with an attempt number).

Modules by concern: ``state`` (what is persisted, and errors), ``plan`` (the input lines and parts), ``submit``,
``poll`` (also ``cancel``) and ``collect``. Clients come from ``service.providers.openai.client`` (creating calls
never retry inside the SDK), failures are classified by ``service.providers.openai.errors`` and listings walked with
``service.providers.openai.paging``, like every other call to an OpenAI-compatible API.
"""

from service.evaluations.generation.batch.collect import collect, not_run, parse_output_line
from service.evaluations.generation.batch.plan import (
    build_batch_lines,
    input_filename,
    part_tag,
    plan_batches,
    split_requests,
)
from service.evaluations.generation.batch.poll import cancel, poll
from service.evaluations.generation.batch.state import (
    COMPLETION_WINDOW,
    DONE_PHASES,
    ENDPOINT,
    MAX_BYTES_PER_BATCH,
    MAX_REQUESTS_PER_BATCH,
    NOT_RUN_CODES,
    TAG_KEY,
    BatchCounts,
    BatchError,
    BatchLineError,
    BatchPhase,
    BatchResult,
    BatchState,
)
from service.evaluations.generation.batch.submit import find_batch, find_input_file, submit, submit_all

__all__ = [
    "COMPLETION_WINDOW",
    "DONE_PHASES",
    "ENDPOINT",
    "MAX_BYTES_PER_BATCH",
    "MAX_REQUESTS_PER_BATCH",
    "NOT_RUN_CODES",
    "TAG_KEY",
    "BatchCounts",
    "BatchError",
    "BatchLineError",
    "BatchPhase",
    "BatchResult",
    "BatchState",
    "build_batch_lines",
    "cancel",
    "collect",
    "find_batch",
    "find_input_file",
    "input_filename",
    "not_run",
    "parse_output_line",
    "part_tag",
    "plan_batches",
    "poll",
    "split_requests",
    "submit",
    "submit_all",
]
