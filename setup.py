"""Which files the wheel holds (everything else about the package is in pyproject.toml).

The repository keeps `migrations/`, `templates/` and `static/` at the top level; the wheel ships
them inside the package, as `app/_migrations`, `app/_templates` and `app/_static`, so that
`pip install .` and `pipx install .` give a working `termpulse`. app/config.py finds them in
either place through the package, never through the working directory. This file exists only
because pyproject.toml cannot list the discovered `app` packages plus renamed folders.
"""

from setuptools import find_namespace_packages, setup

BUNDLED = {"app._migrations": "migrations", "app._templates": "templates", "app._static": "static"}
NO_CACHE = ["__pycache__", "*.__pycache__"]


def _tree(package: str, folder: str) -> list[str]:
    """`folder` and its sub-folders, as the package `package` and its sub-packages."""
    return [package, *(f"{package}.{sub}" for sub in find_namespace_packages(folder, exclude=NO_CACHE))]


DATA_PACKAGES = [name for package, folder in BUNDLED.items() for name in _tree(package, folder)]

setup(
    packages=[*find_namespace_packages(include=["app*"], exclude=NO_CACHE), *DATA_PACKAGES],
    package_dir=BUNDLED,
    package_data={**{name: ["*"] for name in DATA_PACKAGES}, "app.inventory.fleet": ["*.csv"]},
)
