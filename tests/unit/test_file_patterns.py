"""Which paths a `vmkeep files find` pattern matches (a table, as `find -name` and globs)."""

from __future__ import annotations

import pytest

from reconciler.files import matches


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("app.conf", "/etc/app.conf", True),
    ("*.conf", "/etc/app.d/limits.conf", True),
    ("*.conf", "/etc/app.conf.bak", False),
    ("/etc/*.conf", "/etc/app.conf", True),
    ("/etc/*.conf", "/srv/etc/app.conf", False),
    ("etc/*.conf", "/etc/app.conf", True),
    ("etc/*.conf", "/srv/etc/app.conf", True),
    ("app.d/*.conf", "/etc/app.d/limits.conf", True),
    ("App.conf", "/etc/app.conf", False),  # case matters, as on the guest's ext4
    ("naïve.txt", "/Users/Jörg/naïve.txt", True),
    ("[ab]*.txt", "/docs/a.txt", True),
])
def test_a_pattern_matches_names_or_paths_as_documented(pattern, path, expected):
    assert matches(pattern, path) is expected
