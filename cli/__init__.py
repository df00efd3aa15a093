"""The ``coord`` command: a thin click layer over `coordlib.Coordinator`."""
