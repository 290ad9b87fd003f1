"""Reusable widgets of the ldlm TUI: the loss chart and the training statistics."""
