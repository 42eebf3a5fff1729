"""One base for every error the project raises on purpose, and what it means for the exit code.

A command that lets a :class:`NetmonError` escape gets the same treatment everywhere
(:func:`netmon.cli.run`): its :meth:`~NetmonError.report` goes to stderr, without a
traceback, and the process exits with its :attr:`~NetmonError.exit_code`:

* :data:`EXIT_RUNTIME` (1): the input was fine but something failed at run time (a
  broker or database that is down, a disk that is full);
* :data:`EXIT_INPUT` (2): bad usage, config or input that the operator has to fix.

Subclasses keep their other bases (``ValueError``, ``RuntimeError``) where callers catch
them by those, and set ``exit_code`` on the class (or on the instance, when one class
covers both kinds).
"""

from __future__ import annotations

from typing import Final

#: Something failed at run time; running again later may work.
EXIT_RUNTIME: Final = 1
#: Bad usage, config or input: running again unchanged will fail the same way.
EXIT_INPUT: Final = 2


class NetmonError(Exception):
    """Base of the project's own exceptions; see the module docstring."""

    #: The process exit code when this error ends a command.
    exit_code: int = EXIT_RUNTIME

    def report(self) -> str:
        """Text for an operator (one line unless a subclass has more to say)."""
        return str(self)
