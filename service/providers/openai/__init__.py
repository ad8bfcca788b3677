"""Everything specific to OpenAI's API (and servers speaking it): building SDK clients (``client``), what an error
means (``errors``), the headers that say how long to wait (``headers``), bounded paging (``paging``), the fine-tuning
adapter (``provider``) and its result files (``results``).

Kept free of imports here so that using one part (e.g. the headers, from evaluations) does not load the others.
"""
