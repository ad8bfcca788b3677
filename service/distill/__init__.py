"""Distillation: a teacher answers a dataset's prompts and its answers become a new chat dataset, and the recipe that
trains and evaluates a student on it.

Modules: ``models`` (rows), ``states`` (state machines as data), ``generate`` (the dataset distillation: a generation
pass run as an evaluation of the teacher, then the dataset built from its answers), ``build`` (answers to examples:
filters, dedupe, the JSONL), ``recipe`` (distil, split, train, evaluate), ``report`` (agreement, cost and latency per
1,000 requests), ``views``, ``router``.
"""
