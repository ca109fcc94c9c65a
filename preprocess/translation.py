#!/usr/bin/env python
"""Runs `python -m fairseq_r3f.preprocess.translation`: see that module (or --help) for the options."""
import sys

from fairseq_r3f.preprocess.translation import main

if __name__ == "__main__":
    sys.exit(main())
