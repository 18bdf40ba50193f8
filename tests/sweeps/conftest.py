from tests.recipes.conftest import shared_cache  # noqa: F401  (one data cache for the session)
