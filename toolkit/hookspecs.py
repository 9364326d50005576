"""The hooks a plugin may implement. Keep this list short."""

import pluggy

hookspec = pluggy.HookspecMarker("aitk")
hookimpl = pluggy.HookimplMarker("aitk")


@hookspec
def register_usecases(register):
    """Call ``register(usecase)`` for each UseCase this plugin provides."""


@hookspec
def register_commands(app):
    """Add top-level commands to the root Typer ``app``.

    Commands that belong to one use case go in ``UseCase.commands(group)`` instead."""
