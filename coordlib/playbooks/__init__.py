"""The playbooks coordlib ships (package data): `coordlib.playbook` reads them."""
