"""The C extensions (the line scanner ``service/_scan.c``, redaction's candidate pass
``service/_detect.c``, the access log layouts ``service/_fields.c``), or the pure paths
when they are switched off.

``TIDEWAY_NO_EXTENSIONS=1`` (any value but empty or ``0``), read once here at import, as
aiokafka reads ``AIOKAFKA_NO_EXTENSIONS``, turns the C extensions off for the whole process:
``check_lines`` then vouches for no line (every caller asks orjson, as it does for the lines
the scanner is unsure of) and the sink's native path is not offered (``SCAN`` is None, the
columnar path maps everything), redaction searches every value with RE2 (``DETECT`` is
None), and the access log layouts are read by RE2 and Arrow's splits (``FIELDS`` is None).
Output is the same either way; only speed differs. This is
the one environment read besides the settings object: it must act before any setting is
loaded, and it is a property of the build, not of a deployment.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np

NO_EXTENSIONS_VARIABLE = "TIDEWAY_NO_EXTENSIONS"
NO_EXTENSIONS = os.environ.get(NO_EXTENSIONS_VARIABLE, "") not in ("", "0")

# The extension modules, or None when switched off.
SCAN: ModuleType | None = None if NO_EXTENSIONS else importlib.import_module("service._scan")
DETECT: ModuleType | None = None if NO_EXTENSIONS else importlib.import_module("service._detect")
FIELDS: ModuleType | None = None if NO_EXTENSIONS else importlib.import_module("service._fields")


def check_lines(body: bytes, max_line: int) -> tuple[bytes, bytes]:
    """``_scan.check_lines``: one status per b"\\n"-separated line (0: certainly a non-empty
    JSON object orjson reads, at most ``max_line`` bytes; 1: the caller decides) and where
    each line ends (int64). Without the extension every status is 1."""
    if SCAN is not None:
        result: tuple[bytes, bytes] = SCAN.check_lines(body, max_line)
        return result
    newlines = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\n"))
    ends = np.append(newlines, len(body)).astype("<i8")
    return b"\x01" * len(ends), ends.tobytes()
