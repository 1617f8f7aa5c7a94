"""``python -m dra_driver.tools.matrix`` (what ``make matrix`` runs)."""

from dra_driver.tools.matrix.main import main

raise SystemExit(main())
