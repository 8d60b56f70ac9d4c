"""The fast tests compile policies in-process with ctkit's compiled-policy cache off (CTKIT_NO_CACHE):
a test that swaps a stage for a fake must see that stage run, not a kept result. The cache's own tests
(test_compiled_cache.py) turn it on in a directory of their own; the kernel tests run ctkit as users do,
with it on."""
import pytest


@pytest.fixture(autouse=True)
def _no_compiled_cache(monkeypatch):
    monkeypatch.setenv("CTKIT_NO_CACHE", "1")
