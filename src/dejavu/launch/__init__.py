"""Launching dejavu elsewhere: a SLURM job through submitit (torchrun needs nothing here: the command
reads its variables itself, see :mod:`dejavu.distributed`)."""
