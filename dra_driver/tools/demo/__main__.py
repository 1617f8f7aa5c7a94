"""``python -m dra_driver.tools.demo`` (what ``make demo`` runs)."""

from dra_driver.tools.demo.main import main

raise SystemExit(main())
