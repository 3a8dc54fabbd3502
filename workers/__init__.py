"""Deployable processes: `python -m workers.llm`, `python -m workers.notify`."""
