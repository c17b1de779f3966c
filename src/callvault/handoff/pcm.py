"""The standard library's audioop (C speed for G.711 and mixing), without its deprecation
warning: it is in Python 3.11 and 3.12; Python 3.13 removed it and `audioop-lts` brings it back
under the same name."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
