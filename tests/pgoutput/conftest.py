"""The reader's Insert decoding, once per implementation (pure Python, compiled)."""

from __future__ import annotations

import pytest

from implementations import IMPLEMENTATIONS, InsertDecoding, insert_decoding


@pytest.fixture(params=IMPLEMENTATIONS)
def inserts(request: pytest.FixtureRequest) -> InsertDecoding:
    return insert_decoding(request.param)
