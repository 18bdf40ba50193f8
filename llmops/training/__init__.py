"""Training: the loop that runs on Ray Train workers (loop), the model and tokenizer (modeling),
the layouts rank 0 writes to storage (export), and the checks of the model/training sections."""
