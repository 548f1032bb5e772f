"""``python -m dejavu`` (and ``torchrun -m dejavu``) runs the ``dejavu`` command."""

from dejavu.cli import main

raise SystemExit(main())
