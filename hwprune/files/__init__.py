"""Files hwprune writes and reads: atomic writes, checkpoints, and CSV files with a metadata block.

Everything a long job leaves behind goes through :func:`.atomic.write_atomic`, so an
interrupted write never leaves a half-written file in place of a good one.
"""
