//! Where this process sits among the ranks, read from the launcher's
//! environment (torchrun / DeepSpeed, Slurm, OpenMPI), else one process.
