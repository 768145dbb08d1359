"""Shared test set-up: keep TensorFlow quiet and deterministic if a test loads it.

The helper modules beside the tests (``_export_helpers``, ``_data_helpers``,
``_mediapipe_client``) import by name: pytest puts this folder on ``sys.path`` for its
conftest (the default "prepend" import mode, tests/ having no ``__init__.py``)."""

import logging
import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def edgeclf_log(caplog):
    """What the library said through the ``edgeclf`` logger (also after a CLI test in the same
    process has sent it to stderr only)."""
    logger = logging.getLogger("edgeclf")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
