"""``python -m xmodal``: the same as the ``xmodal`` command."""

from xmodal.cli import main

main()
