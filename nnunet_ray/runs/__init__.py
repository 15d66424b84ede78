"""runs: the layout of a training run and its files: run names, checkpoint folders, best / latest."""
