"""Test support for coordlib and for users' own scripts: real sshd, real git repos.

Use it as a pytest plugin (``pytest_plugins = ["coordlib.testing.plugin"]``) or
call the functions directly.  Nothing here is imported by the rest of coordlib.
"""

from .gitrepo import GitRepo, make_git_repo
from .sshd import SSHServer, start_sshd

__all__ = ["GitRepo", "SSHServer", "make_git_repo", "start_sshd"]
