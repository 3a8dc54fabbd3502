"""The exception tree: every error kind has a class, every class tells the reader what to do."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from vamu_tasks import errors
from vamu_tasks.errors import (
    ERROR_KINDS,
    InvalidJob,
    PermanentError,
    RateLimited,
    TransientError,
    VamuError,
    json_type_name,
)
from vamu_tasks.inspiration.schemas import InspirationRequest


def subclasses(cls: type[VamuError]) -> list[type[VamuError]]:
    found: list[type[VamuError]] = []
    for sub in cls.__subclasses__():
        if sub.__module__ == errors.__name__:
            found += [sub, *subclasses(sub)]
    return found


ALL: list[type[VamuError]] = [VamuError, *subclasses(VamuError)]
LEAVES = [cls for cls in ALL if not any(c in ALL for c in cls.__subclasses__())]


def validation_error(data: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        InspirationRequest.model_validate(data)
    return caught.value


def test_the_error_kinds_are_the_ones_of_the_contract() -> None:
    assert set(ERROR_KINDS) == {
        "invalid_job",
        "user_not_found",
        "upstream_api",
        "rate_limited",
        "quota",
        "budget_exceeded",
        "context_length",
        "content_filter",
        "schema_invalid",
        "provider_error",
        "timeout",
        "cancelled",
        "internal",
    }


def test_every_error_kind_is_raised_by_some_class() -> None:
    assert {cls.error_kind for cls in ALL} == set(ERROR_KINDS)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_class_has_a_default_message(cls: type[VamuError]) -> None:
    error = cls()

    assert error.message == str(error) == cls.default_message
    assert error.message.endswith(".")


def test_each_leaf_class_says_something_different() -> None:
    messages = [cls.default_message for cls in LEAVES]

    assert len(set(messages)) == len(messages) == 16


def test_only_transient_errors_are_retryable() -> None:
    for cls in ALL:
        assert cls.retryable == issubclass(cls, TransientError), cls.__name__
        assert issubclass(cls, PermanentError | TransientError) or cls is VamuError


def test_a_given_message_replaces_the_default() -> None:
    assert RateLimited("429 from OpenAI", retry_after=3).message == "429 from OpenAI"
    assert RateLimited("429 from OpenAI", retry_after=3).retry_after == 3


def test_invalid_job_lists_each_field_and_its_problem() -> None:
    error = InvalidJob.from_validation_error(
        validation_error({"count": 0, "hint": "h" * 501, "extra": 1})
    )

    parts = error.message.split("; ")
    assert [part.split(":")[0] for part in parts] == ["userId", "count", "hint", "extra"]
    assert "userId: Field required" in parts
    assert error.error_kind == "invalid_job"


def test_invalid_job_does_not_echo_the_input() -> None:
    secret_hint = "my phone number is 07700 900123 " * 20

    error = InvalidJob.from_validation_error(
        validation_error({"userId": "u-ada", "hint": secret_hint, "count": 977})
    )

    assert "hint:" in error.message and "count:" in error.message
    assert "07700" not in error.message
    assert "977" not in error.message


def test_invalid_job_for_data_that_is_not_an_object_names_the_data() -> None:
    error = InvalidJob.from_validation_error(validation_error(["u-ada"]))  # type: ignore[arg-type]

    assert error.message.startswith("(data): ")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "integer"),
        (3.5, "number"),
        ("3", "string"),
        (["a"], "array"),
        ({"a": 1}, "object"),
    ],
)
def test_json_type_name_uses_json_schemas_names_not_pythons(value: object, name: str) -> None:
    assert json_type_name(value) == name


def test_invalid_job_gives_a_validators_own_words_without_pydantics_value_error_prefix() -> None:
    class Odd(BaseModel):
        n: int

        @field_validator("n")
        @classmethod
        def _odd(cls, value: int) -> int:
            if value % 2 == 0:
                raise ValueError("must be odd")
            return value

    with pytest.raises(ValidationError) as caught:
        Odd.model_validate({"n": 2})

    assert InvalidJob.from_validation_error(caught.value).message == "n: must be odd"


def test_invalid_job_says_what_a_pattern_means_instead_of_quoting_the_regex() -> None:
    error = InvalidJob.from_validation_error(
        validation_error({"userId": "u-\u0000", "locale": "en_GB"})
    )

    assert error.message == (
        "userId: must not contain the NUL character (U+0000); "
        "locale: expected a BCP 47 language tag, such as en-GB, pt-BR or zh-Hant-TW"
    )
