"""The package's public API: ``__all__`` is honest in every module (the httpx habit)."""

from __future__ import annotations

import importlib

import pytest

import providers

MODULES = [
    "base", "breaker", "cost", "email_smtp", "enrichment_http", "errors", "factory", "guard",
    "http_adapter", "idempotency", "llm_openai", "ratelimit", "retry", "settings", "transport",
]  # fmt: skip


def test_package_exports_exist_and_are_unique() -> None:
    for name in providers.__all__:
        assert hasattr(providers, name), name
    assert len(set(providers.__all__)) == len(providers.__all__)


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_declares_what_it_exports(module_name: str) -> None:
    module = importlib.import_module(f"providers.{module_name}")
    assert module.__doc__, module_name
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj) and getattr(obj, "__module__", None) == module.__name__:
            assert obj.__doc__, f"{module_name}.{name} has no docstring"
