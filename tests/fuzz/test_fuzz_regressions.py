"""Inputs the fuzzers found, kept as regression cases (tests/fuzz/test_fuzz.py)."""

from __future__ import annotations

import base64

import pytest

from tests.fuzz.targets import TARGETS
from tests.native import isobmff

# box_reader, out-of-memory: a trun (flags 0x000001 only) inside a forged moof
# claiming 0x015F9000 samples.
TRUN_HUGE_COUNT = base64.b64decode(
    "AAAAHHN0eXBtc2RoAAAAAG1zZGhtc2l4Y21mcwAAADRzaWR4AQAAAAAAAAEAAV+QAAAAAAAAC7gAFAAAAAAAAHRm"
    "ZHQBAAAAAAAAAAAAC7gAAABEdHJ1bgEBAAFfkACQAAAAAAAAiG1vb2YAEG0AAGZoZAAAAAAAAAABAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAcCAAAAAAAAAAAAC7gAAAAHAQEAAAAAC7gAAAu4AAAABwEBAAD///RIAAAA"
    "AAADZYiEAAADAGWIhA=="
)


def test_trun_with_huge_sample_count_and_no_fields_is_rejected() -> None:
    trun = next(b for b in isobmff.parse(TRUN_HUGE_COUNT) if b.type == "trun")
    with pytest.raises(ValueError, match="without per-sample fields"):
        isobmff.trun(trun)
    TARGETS["box_reader"](TRUN_HUGE_COUNT)
