"""The installed code's version, as the agent asks before each warm spawn: a changed file
changes it, and the agent's cached answer is never more than a second old."""

from __future__ import annotations

import os

from computed.vmm import code_version as cv


def test_a_changed_file_changes_the_version_within_a_second(tmp_path, monkeypatch):
    (tmp_path / "vmm").mkdir()
    main = tmp_path / "vmm" / "main.py"
    main.write_text("one")
    clock = [1000.0]
    monkeypatch.setattr(cv, "_ROOT", str(tmp_path))
    monkeypatch.setattr(cv, "_last", None)
    monkeypatch.setattr(cv.time, "monotonic", lambda: clock[0])
    first = cv.recent_code_version()
    assert first == cv.code_version()
    main.write_text("two, longer")
    os.utime(main, ns=(1, 1))
    clock[0] += cv.MAX_AGE / 2
    assert cv.recent_code_version() == first  # asked again within the second: cached
    clock[0] += cv.MAX_AGE / 2
    assert cv.recent_code_version() == cv.code_version() != first
