"""Build-time mapping alone (everything else is in pyproject.toml): ``search_spaces/`` at the repository root, the
one source of the search-space presets, becomes the package data folder ``autoprune/search_spaces`` of the wheel."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["autoprune", "autoprune.*"]), "autoprune.search_spaces"],
    package_dir={"autoprune.search_spaces": "search_spaces"},
)
