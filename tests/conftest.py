"""Shared fixtures: MindSpore on CPU, fixture folder path."""
import os

import mindspore as ms
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")


@pytest.fixture
def fixtures_dir():
    return FIXTURES
