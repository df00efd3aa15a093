"""``coord web``: a dashboard in the browser, served by coordlib itself.

The board (each repo's issues as the pipeline's columns, the machines, the spend), each
assignment's live filtered stream, and a cost chart; actions (stop, retry, bounce, merge,
approve) behind a token.  The snapshot it shows is `coordlib.dashboard`'s; this package adds
only what the web needs:

- `hub`: the poller (one status pass per interval, in one task) and the tails' fan-out;
- `tails`: one remote tail per assignment viewed, shared by every viewer;
- `app`: the Starlette routes; `security`: the token, Host and Origin checks;
- `actions`: each action as a `Coordinator` verb; `views`: templates and their filters;
- `server`: uvicorn on a socket bound here, with no access log.

Starlette and uvicorn are an extra (``pip install 'coordlib[web]'``); `require` says so.
"""

from __future__ import annotations

import importlib.util

from ..errors import MissingDependencyError
from .options import DEFAULT_HOST, DEFAULT_INTERVAL, DEFAULT_PORT, WebOptions

__all__ = ["DEFAULT_HOST", "DEFAULT_INTERVAL", "DEFAULT_PORT", "WebOptions", "require"]

_NEEDS = ("starlette", "uvicorn", "jinja2")


def require() -> None:
    """Raise `MissingDependencyError` naming what to install when the web extra is missing."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"coord web needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            " not installed: pip install 'coordlib[web]'"
        )
