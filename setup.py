"""The C part of the package: an exact token counter for dataset validation (see service/_tokcount.c).

Metadata lives in pyproject.toml; this file only declares the extension. It is optional: where no C compiler is
available the package installs without it and token counting uses bpe-openai or tiktoken instead (same counts, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "service._tokcount",
            sources=["service/_tokcount.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
