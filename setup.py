"""Package list for setuptools (everything else is in pyproject.toml).

The repository folder `ports/` installs under the project's own name, `cocoa_jax_ports`, so
installing cocoa-jax adds no generic top-level `ports` module to an environment.
"""
from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["cocoa_jax", "cocoa_jax.*"]) + ["cocoa_jax_ports"],
    package_dir={"cocoa_jax_ports": "ports"},
)
