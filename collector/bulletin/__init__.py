"""The monthly speed bulletin (HTML, PDF, CSV) against the targets of plan 568/KH-UBND.

:func:`collector.bulletin.generate.generate` is the entry point; the command line is
``netmon-collector bulletin`` (:mod:`collector.cmd_bulletin`). How the figures are made is
documented in ``docs/methodology.md``.
"""
