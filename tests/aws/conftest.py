"""Every test here runs against a wiped moto (tests/estate.py)."""

from estate import aws, estate  # noqa: F401  (fixtures)
