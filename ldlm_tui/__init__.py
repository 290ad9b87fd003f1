"""ldlm_tui: the `ldlm` command line and its Textual app, front ends to ldlm_engine."""
