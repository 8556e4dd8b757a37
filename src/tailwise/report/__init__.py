"""Self-contained HTML reports: an analysis table (:func:`write_html`) and a pruning result
(:func:`write_prune_html`)."""

from tailwise.report.html import write_html
from tailwise.report.prune_html import write_prune_html

__all__ = ["write_html", "write_prune_html"]
