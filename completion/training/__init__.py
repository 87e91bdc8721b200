"""Training the completion network: data layouts, teacher depth, masks from rendered views, DDP training,
submitit/SLURM sharding, evaluation on real RGB-D ground truth."""
