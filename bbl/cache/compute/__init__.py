"""How each cache kind's chunks are computed (one floor above the reader and writer, one below the dump driver):
`base.KindOperations` (the teachers a kind loads, its input checks, attributes, chunk computer and the
recomputation `bbl cache verify` compares against), `ensemble` (topk, sampled, hybrid), `cross_tokenizer`,
`fidelity` (stored vs recomputed targets), `registry` (`operations_of`, `register_operations`).
"""
