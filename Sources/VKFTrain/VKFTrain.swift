// VKFTrain: optimizers, LR schedules, losses, trainers, checkpoints.
