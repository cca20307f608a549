"""Apache Beam transforms of the label job: list and shard a corpus, decode, label, write."""
