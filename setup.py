"""Packaging lives in pyproject.toml; this file adds the licence in the form the installed setuptools knows, and
lets pips older than 21.3 (cluster environments have them) make editable installs (``pip install -e .``)."""

import setuptools

major = int(setuptools.__version__.split(".")[0])
if major >= 77:  # PEP 639: License-Expression, the licence file under .dist-info/licenses/
    licence = {"license_expression": "MIT", "license_files": ["LICENSE"]}
else:
    licence = {"license": "MIT", "license_files": ["LICENSE"]}

if major >= 61:  # reads the [project] table of pyproject.toml
    setuptools.setup(**licence)
else:
    raise SystemExit(f"fairseq-r3f needs setuptools >= 61 to install (found {setuptools.__version__}): "
                     f"pip install -U setuptools")
