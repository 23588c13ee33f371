"""Root conftest: loads the suites' pytest plugin for this checkout only.

migbench registers no `pytest11` entry point, so installing it changes nothing in other projects'
pytest runs; the suites (`pytest suites ...`, the tox envs) and the harness's tests run from here.
"""

pytest_plugins = ["migbench.pytest_plugin"]
