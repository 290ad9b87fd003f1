"""Panes and modal screens of the ldlm TUI (the Generate pane lives in ``generate.py``)."""
