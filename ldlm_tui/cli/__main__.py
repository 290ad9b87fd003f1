"""``python -m ldlm_tui.cli``: the same as the ``ldlm`` console script."""

from . import main

main()
