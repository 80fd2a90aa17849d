"""Reference methods of the benchmark, behind the one :class:`~metarec.baselines.base.Method`
protocol: popularity, random, content kNN, ALS/BPR with fold-in, EMCDR, pooled pretraining, MeLU,
DropoutNet. The registry of every method is :data:`metarec.evaluation.methods.METHODS`."""
