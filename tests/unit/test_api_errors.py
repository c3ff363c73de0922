"""Validation messages become a field name and a reason."""

from __future__ import annotations

from api.errors import FieldError, field_error_of


def test_msgspec_paths_become_field_names() -> None:
    assert field_error_of("Expected `str`, got `int` - at `$.target_url`", None, "body") == FieldError(
        field="target_url", reason="Expected `str`, got `int`"
    )
    assert field_error_of("Expected `str`, got `int` - at `$.events[0]`", None, "body").field == "events[0]"


def test_unknown_fields_are_named() -> None:
    error = field_error_of("Object contains unknown field `colour`", None, "body")
    assert error.field == "colour" and "unknown field" in error.reason


def test_query_parameter_errors_use_the_key() -> None:
    assert field_error_of("Input should be less than or equal to 200", "limit", "query").field == "limit"
