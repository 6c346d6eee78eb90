"""The end-to-end demo behind ``siamkit demo``."""

from siamkit.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
