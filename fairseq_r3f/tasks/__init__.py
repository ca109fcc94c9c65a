"""Tasks of the plugin (fairseq imports every module here for --user-dir)."""
