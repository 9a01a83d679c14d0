"""mi-probe's command-line interface (Typer). Thin: parse, call the library, render."""
