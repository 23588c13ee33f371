"""Root conftest: loads the migbench pytest plugin when the package is not installed.

The installed package registers the same module as the `pytest11` entry point; pytest registers
a plugin once per module name, so both routes together load it once.
"""

pytest_plugins = ["harness.pytest_plugin"]
