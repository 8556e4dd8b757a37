"""Reports of an analysis table: one self-contained HTML page (:func:`write_html`)."""

from tailwise.report.html import write_html

__all__ = ["write_html"]
