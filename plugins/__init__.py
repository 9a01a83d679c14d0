"""Built-in plugins of mi-probe (estimators and model adapters).

Each module here is a pluggy plugin registered through mi-probe's own ``mi_probe``
entry-point group, exactly as a third-party plugin would be.
"""
