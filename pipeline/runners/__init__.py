"""One runner per orchestrator."""
