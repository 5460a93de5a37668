from __future__ import annotations

import types

import wagate.engines


def test_all_imports_are_exported() -> None:
    public = sorted(
        name
        for name, value in vars(wagate.engines).items()
        if not name.startswith("_")
        # Submodules become attributes once imported, and `from __future__ import annotations`
        # leaves its feature object behind; neither is part of the interface.
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert wagate.engines.__all__ == public


def test_exported_names_resolve() -> None:
    for name in wagate.engines.__all__:
        assert getattr(wagate.engines, name) is not None


def test_importing_an_engine_module_keeps_the_check_meaningful() -> None:
    import wagate.engines.sandbox  # noqa: F401

    test_all_imports_are_exported()
