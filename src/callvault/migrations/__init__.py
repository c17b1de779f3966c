"""The migration scripts (versions/) and what they compare against.

`load_all_models` lives here, on the migration side, rather than in db.py: the plumbing
(db.py) knows no domain, while the migration environment needs every domain's tables."""

from __future__ import annotations


def load_all_models() -> None:
    """Import every domain's models so Base.metadata knows every table (for Alembic)."""
    from callvault.accounts import models as _accounts  # noqa: F401
    from callvault.applications import models as _applications  # noqa: F401
    from callvault.console import models as _console  # noqa: F401
    from callvault.credentials import models as _credentials  # noqa: F401
    from callvault.encryption_keys import models as _encryption_keys  # noqa: F401
    from callvault.recordings import models as _recordings  # noqa: F401
    from callvault.webhooks import models as _webhooks  # noqa: F401
