"""The `cms` command (console script `cms.app.cli.main:main`; `python -m cms.app.cli` runs it too)."""
