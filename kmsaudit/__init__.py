"""kmsaudit: who outside each AWS account can use each KMS key, and when that changes."""

__version__ = "0.1.0"
