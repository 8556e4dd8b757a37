"""Training-time algorithms and the loop they plug into."""

from tailwise.train.loop import Callback, History, evaluate, fit

__all__ = ["Callback", "History", "evaluate", "fit"]
