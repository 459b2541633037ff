"""The plugin's tests use it as a user would: their App, through the ``pigeon_app`` fixture."""

from __future__ import annotations

import pytest

import pigeon
from tests.testing import shop


@pytest.fixture
def pigeon_app() -> pigeon.App:
    return shop.app
