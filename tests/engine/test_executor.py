"""Job options as they arrive from the admin API's form fields or a queue."""

from __future__ import annotations

from engine.config import Settings
from engine.executor import options_from


def test_form_fields_become_typed_options() -> None:
    settings = Settings(preset="medium", segment_seconds=6.0)
    opts = options_from(settings, {"ladder": "720:3000", "copy": "false",
                                   "segment_seconds": "2"})
    assert (opts.ladder, opts.copy, opts.segment_seconds, opts.preset) == \
        ("720:3000", False, 2.0, "medium")
    assert options_from(settings, {"copy": "true"}).copy is True
    assert options_from(settings, {"copy": True}).copy is True
    assert options_from(settings, {}).segment_seconds == 6.0
    assert options_from(settings, {"ladder": ""}).ladder is None
