"""``mtlrec-report``: from run folders' ``results.json`` files to paper-style tables and plots.

Modules, in pipeline order: :mod:`~mtlrec.report.collect` (find and load runs),
:mod:`~mtlrec.report.stats` (mean/std/n, Welch's test, metric directions),
:mod:`~mtlrec.report.reference` (published numbers from YAML), :mod:`~mtlrec.report.table`
(the table as data), :mod:`~mtlrec.report.render` (Markdown/LaTeX/CSV),
:mod:`~mtlrec.report.plots` (figures), :mod:`~mtlrec.report.output` (atomic writes) and
:mod:`~mtlrec.report.cli` (the command). Nothing is imported here, so importing the package
does not pull in matplotlib.
"""
