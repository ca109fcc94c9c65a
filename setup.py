"""fairseq-r3f: R3F and R4F fine-tuning (Aghajanyan et al., ICLR 2021) as a fairseq plugin.

fairseq itself is deliberately not a dependency: the plugin runs on the fairseq the user already has
(official >= 0.12, a source checkout, or fairseq-fixed on Python 3.11), and pip must never pull a second
copy next to it. scripts/install.sh installs one for a fresh machine.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq-r3f",
    version="0.1.0",
    description="R3F/R4F fine-tuning (Better Fine-Tuning by Reducing Representational Collapse) for fairseq",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_r3f", "fairseq_r3f.*"]),
    package_data={"fairseq_r3f": ["hparams/*.tsv"]},
    python_requires=">=3.8",
    install_requires=[],
    extras_require={
        "eval": ["rouge-score>=0.1.2", "matplotlib>=3.5", "sentencepiece>=0.1.99", "nltk>=3.8"],
        "test": ["pytest>=7"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
