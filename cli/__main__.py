"""Allow ``python -m coord_cli`` (the cli/ folder is installed as the package coord_cli)."""

from .main import main

main()
