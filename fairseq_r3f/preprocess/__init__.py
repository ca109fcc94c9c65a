"""Raw official dataset files -> BPE or sentencepiece -> fairseq binaries, one module a dataset family.

Run as ``python -m fairseq_r3f.preprocess.glue ...`` (or the scripts in the repository's preprocess/).
"""
