"""``python -m dra_driver.demo`` (what ``make demo`` runs)."""

from dra_driver.demo.main import main

raise SystemExit(main())
