"""The `mi-probe` Typer application. Each command module adds its commands here."""

from __future__ import annotations

import typer

from . import bench_cmds, estimator_cmds, probe_cmds, rescale_cmds, task_cmds

app = typer.Typer(
    name="mi-probe",
    help="Measure mutual information between transformer hidden states and the next token.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One line per command module; each defines register(app).
estimator_cmds.register(app)
bench_cmds.register(app)
task_cmds.register(app)
rescale_cmds.register(app)
probe_cmds.register(app)


def _one_line_warnings() -> None:
    """Show warnings (e.g. a broken plugin) as one readable line, without source lines."""
    import warnings

    from .common import err_console

    def show(message, category, filename, lineno, file=None, line=None):
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    warnings.showwarning = show


def main() -> None:
    """Console-script entry point."""
    _one_line_warnings()
    app()


if __name__ == "__main__":
    main()
