"""The distribution's files; its metadata and dependencies are in pyproject.toml.

Packages are found under the top-level names below, so a new subpackage ships without an edit
here (a new top-level package needs its name added). ``conf/`` stays at the repository's top
level and ships inside the wheel as ``experiments/conf``, where ``experiments.paths`` looks for
it when the project is installed; the embedded models ship as ``models/tiny``.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ["decoding", "models", "copula", "edlm", "experiments", "training"]

setup(
    packages=find_packages(include=[p for n in TOP_LEVEL for p in (n, f"{n}.*")])
    + ["experiments.conf"],
    package_dir={"experiments.conf": "conf"},
    package_data={
        "experiments.conf": ["*.yaml", "**/*.yaml"],
        "models": ["tiny/README.md", "tiny/*/*.json", "tiny/*/*.safetensors"],
    },
)
