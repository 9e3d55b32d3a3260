"""The ``envkit`` console script: an Invoke program over :data:`envkit.tasks.ns`.

It offers envkit's commands and the few global options that mean something
for envkit (``--help``, ``--version``, ``--list`` and shell completion), not
Invoke's own options for running shell commands. A mistyped command or option
is one line naming it, with the closest known name, and exit 2.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Mapping

from invoke import Argument, Exit, ParseError, Program
from invoke.completion.complete import complete, print_completion_script
from invoke.util import helpline

from envkit import __version__
from envkit.tasks import ns

SIGPIPE_EXIT = 141  # how a shell reports a process ended by SIGPIPE
USAGE_EXIT = 2
SHELLS = ("bash", "zsh", "fish")


class EnvkitProgram(Program):
    """Invoke's Program with envkit's global options only, and usage errors that help."""

    def core_args(self) -> list[Argument]:
        return [
            Argument(
                names=("help", "h"),
                optional=True,
                help="Show this help, or a command's: envkit build --help.",
            ),
            Argument(names=("version", "V"), kind=bool, default=False, help="Show envkit's version."),
            Argument(names=("list", "l"), kind=bool, default=False, help="List the commands."),
            Argument(
                names=("print-completion-script",),
                kind=str,
                default="",
                help="Print the shell completion script for bash, zsh or fish (see the README).",
            ),
            Argument(
                names=("complete",),
                kind=bool,
                default=False,
                help="Print completion candidates (the completion script calls this).",
            ),
        ]

    def parse_core(self, argv: list[str] | None) -> None:
        self.normalize_argv(argv)
        self.parse_core_args()
        if self.args.version.value:
            self.print_version()
            raise Exit
        shell = self.args["print-completion-script"].value
        if shell:
            if shell not in SHELLS:
                raise usage(f"no completion script for {shell!r}; choose one of {', '.join(SHELLS)}")
            print_completion_script(shell=shell, names=self.binary_names)
            raise Exit

    def parse_core_args(self) -> None:
        try:
            super().parse_core_args()
        except ParseError as err:
            raise self._usage(err) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as err:
            raise self._usage(err) from None
        # Invoke drops a repeatable option given without a value (`--image` alone means "all",
        # `--image x --image` means "x"): that is a mistake to say, not a meaning to guess.
        valueless = self._valueless_repeatable()
        if valueless is not None:
            raise usage(f"--{valueless.replace('_', '-')} needs a value")

    def _valueless_repeatable(self) -> str | None:
        """The name of the first repeatable option given without a value, or None.

        The command line is read again as Invoke reads it: a command's name starts its options;
        an option that takes a value gets it after ``=`` (``-ix`` for a short one), or takes the
        next word unless that word is an option of the command.
        """
        context = None
        waiting: Argument | None = None  # the option that takes the next word as its value
        for token in self.core.unparsed:
            if token == "--":
                break
            flags: Mapping[str, Argument] = context.flags if context is not None else {}
            is_flag = token in flags or (context is not None and token in context.inverse_flags)
            if waiting is not None and not is_flag:
                waiting = None  # the word is its value
                continue
            if waiting is not None:
                return waiting.name if waiting.kind is list else None
            if context is None or not token.startswith("-"):
                context = self.parser.contexts.get(token, context)
                continue
            for arg, value in _words(token, flags):
                if waiting is not None and arg is None:
                    waiting = None  # the word is its value
                elif waiting is not None:
                    return waiting.name if waiting.kind is list else None
                elif arg is not None and arg.takes_value:
                    if value is None:
                        waiting = arg
                    elif not value and arg.kind is list:
                        return str(arg.name)
        return waiting.name if waiting is not None and waiting.kind is list else None

    def parse_cleanup(self) -> None:
        wanted = self.args.help.value
        if wanted is True:
            self.print_help()
            raise Exit
        if wanted:
            if wanted not in self.parser.contexts:
                raise self._unknown(str(wanted), list(self.collection.task_names), "command")
            self.print_task_help(wanted)
            raise Exit
        if self.args.list.value:
            self.list_tasks()
            raise Exit
        if self.args.complete.value:
            complete(
                names=self.binary_names,
                core=self.core,
                initial_context=self.initial_context,
                collection=self.collection,
                parser=self._make_parser(),
            )
        if not self.tasks:
            self.no_tasks_given()

    def update_config(self, merge: bool = True) -> None:
        # Invoke's own run-time options (echo, pty, warn, sudo...) do not exist here.
        if merge:
            self.config.merge()

    def print_help(self) -> None:
        print(
            f"{self.name} {self.version}: reproducible, fast, parallel end-to-end test environments on Docker"
        )
        print("")
        print(f"Usage: {self.binary} <command> [--options]   ({self.binary} <command> --help: its options)")
        print("")
        print("Commands:")
        print("")
        self.print_columns(
            [(name, helpline(self.collection[name])) for name in sorted(self.collection.task_names)]
        )
        print("Options:")
        print("")
        self.print_columns(self.initial_context.help_tuples())

    def print_task_help(self, name: str) -> None:
        """``envkit build --help``: the command's usage line, what it does, and its options (not
        Invoke's ``[--core-opts] ... [other tasks here ...]``: envkit runs one command)."""
        options = self.parser.contexts[name].help_tuples()
        print(f"Usage: {self.binary} {name}" + (" [options]" if options else ""))
        print("")
        for line in (inspect.getdoc(self.collection[name]) or "").splitlines():
            print(self.leading_indent + line if line.strip() else "")
        print("")
        print("Options:")
        print("")
        if options:
            self.print_columns(options)
        else:
            print(self.leading_indent + "none")
            print("")

    def _usage(self, err: ParseError) -> Exit:
        """One line for a command line Invoke could not parse, with the closest known name."""
        text = str(err)
        if text.startswith("No idea what '") and text.endswith("' is!"):
            token = text[len("No idea what '") : -len("' is!")]
            context = err.context
            if token.startswith("-"):
                where = context.name if context is not None and context.name else None
                flags = list(context.flags) if context is not None else []
                flags += list(self.initial_context.flags)
                return self._unknown(token, flags, f"{where or 'envkit'} has no option")
            return self._unknown(token, list(self.collection.task_names), "command")
        needs = re.match(r"Flag <Argument: ([\w-]+)", text)
        if needs and "needed value" in text:
            return usage(f"--{needs[1].replace('_', '-')} needs a value")
        return usage(text.rstrip("!"))

    def _unknown(self, token: str, known: list[str], what: str) -> Exit:
        """``what`` is "command", or "<command> has no option"."""
        close = difflib.get_close_matches(token, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if what == "command":
            return usage(f"{token!r} is not an envkit command{hint} (envkit --help lists them)")
        return usage(f"{what} {token!r}{hint}")


def _words(token: str, flags: Mapping[str, Argument]) -> list[tuple[Argument | None, str | None]]:
    """An option word as Invoke splits it (``--name=value``; ``-xVALUE`` for a short option that
    takes a value; ``-abc`` for short options together): each option (None: unknown here) with
    its value (None: not given)."""

    def option(name: str) -> Argument | None:
        try:  # flags is a Lexicon: indexing also finds short names, which .get() misses
            return flags[name]
        except KeyError:
            return None

    if token.startswith("--"):
        name, equals, value = token.partition("=")
        return [(option(name), value if equals else None)]
    first = option(token[:2])
    if len(token) > 2 and first is not None and first.takes_value:
        return [(first, token[2:])]
    return [(option(f"-{letter}"), None) for letter in token[1:]]


def usage(message: str) -> Exit:
    return Exit(f"envkit: error: {message}", code=USAGE_EXIT)


program = EnvkitProgram(
    namespace=ns, version=__version__, name="envkit", binary="envkit", binary_names=["envkit"]
)


def main() -> None:
    code: str | int | None = 0
    try:
        program.run()
    except SystemExit as done:  # Invoke ends every run with sys.exit
        code = done.code if isinstance(done.code, (str, int)) or done.code is None else 1
    except BrokenPipeError:
        code = SIGPIPE_EXIT
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or SIGPIPE_EXIT
    if code == SIGPIPE_EXIT or _stdout_gone():
        # The reader went away (`envkit status | head`): nothing more can be said to it, and
        # Python must not complain while flushing at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def _stdout_gone() -> bool:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        return True
    return False
