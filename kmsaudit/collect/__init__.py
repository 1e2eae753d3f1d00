"""The only package that talks to AWS (aiobotocore); it returns model objects, never botocore's."""

from kmsaudit.collect.collector import Collector, SharedSessions

__all__ = ["Collector", "SharedSessions"]
