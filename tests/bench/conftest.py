"""The bench's tests use the service tests' live server and tiny model repository."""

from tests.service.conftest import model_repository, server  # noqa: F401  (pytest fixtures, shared)
