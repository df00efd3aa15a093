"""A fake GitHub for tests: REST checked against GitHub's OpenAPI description, real git."""
