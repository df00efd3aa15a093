"""The merge queue: batches (`queue`) and landing them (`runner`)."""
