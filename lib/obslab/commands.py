"""What every `obslab` command group shares: an app whose commands end an ObslabError with its
message (never a traceback), and options made from settings, so an option's environment variable
and help cannot drift from Settings."""

from __future__ import annotations

import functools
from typing import Any

import typer

from obslab.errors import ObslabError
from obslab.settings import Settings, load_settings


def fail(err: ObslabError) -> None:
    """End the command with the error's message and exit code 1."""
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


class ReportingTyper(typer.Typer):
    """A Typer app whose every command ends an ObslabError (bad input, a locked store, no broker)
    with its message, never a traceback."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorate(fn):
            @functools.wraps(fn)
            def run(*a, **kw):
                try:
                    return fn(*a, **kw)
                except ObslabError as err:
                    fail(err)
            register(run)
            return fn
        return decorate


def setting(name: str, *flags: str, **extra: Any) -> Any:
    """An option for the setting `name`: unset means the setting's value (environment, .env, default)."""
    field = Settings.model_fields[name]
    return typer.Option(None, *flags, envvar=name.upper(), help=field.description, show_default=False, **extra)


def flag(help: str, *names: str) -> Any:
    """A yes/no option that is no setting."""
    return typer.Option(False, *names, help=help)


AS_JSON = flag("print JSON", "--json")


def settings_with(**overrides) -> Settings:
    """Settings with the options the user gave on top (None: not given)."""
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})
