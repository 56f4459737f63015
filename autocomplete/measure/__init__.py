"""Measurement tooling behind `manage.py evaluate` and `manage.py bench`; never imported when serving."""
