"""Azure's rules for training files: JSONL, UTF-8 with a byte-order mark, under 512 MB (see the package docstring).

Our datasets are validated UTF-8 JSONL without a BOM, so the upload adds one; the size is checked before anything is
sent, naming the limit, because Azure's own refusal comes only once the job runs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAX_FILE_BYTES = 512 * 1024**2
BOM = b"\xef\xbb\xbf"


class FileRuleError(ValueError):
    pass


def check_size(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise FileRuleError(
            f"Azure OpenAI accepts training files up to 512 MB; this one is {size / 1024**2:.1f} MB: "
            "split the dataset or use fewer examples"
        )


@contextmanager
def with_bom(path: Path) -> Iterator[Path]:
    """``path`` itself when it starts with a BOM, else a temporary copy that does (removed afterwards)."""
    with path.open("rb") as fh:
        if fh.read(3) == BOM:
            yield path
            return
    check_size(path.stat().st_size + len(BOM))
    with tempfile.TemporaryDirectory(prefix="azure-upload-") as tmp:
        copy = Path(tmp) / path.name
        with path.open("rb") as src, copy.open("wb") as dst:
            dst.write(BOM)
            shutil.copyfileobj(src, dst, 1024**2)
        yield copy
