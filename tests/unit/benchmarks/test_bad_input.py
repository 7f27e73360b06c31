"""The bad-input benchmark's one judgement of its own: a negative case whose query, as sent, was valid."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.bad_input import valid_as_sent
from serve_app.usage_params import usage_parameters

OPERATION = SimpleNamespace(definition=SimpleNamespace(raw={"parameters": usage_parameters(own_key=False)}))
URL = "http://127.0.0.1:1/v1/admin/usage?"


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ("start_time=1&teams=false", True),  # 'false' sent for a string: the text is a fine name
        ("start_time=1&models=x", True),  # a lone string sent for an array: a one-item array
        ("start_time=1&group_by=team&group_by=model&limit=5&page=86400", True),
        ("start_time=0.0", False),  # a float for an integer stays broken as text
        ("start_time=-1", False),
        ("models=x", False),  # the required start_time missing
        ("start_time=1&colour=red", False),
        ("start_time=1&start_time=2", False),
        ("start_time=1&group_by=cost", False),
        ("start_time=1&teams=", False),
        ("start_time=1&page=x", False),
        ("start_time=1&" + "&".join(["teams=a"] * 101), False),  # past maxItems
    ],
)
def test_valid_as_sent_reads_the_query_as_the_text_it_is(query: str, valid: bool) -> None:
    assert valid_as_sent(OPERATION, URL + query) is valid
