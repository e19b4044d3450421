"""``python -m vcm_eval``: see :mod:`vcm_eval.cli`."""

from vcm_eval.cli import main

main()
