"""Everything that touches a machine: transports, commands and the remote run protocol."""
