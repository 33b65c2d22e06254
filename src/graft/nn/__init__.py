"""Model families, initialization, activations and MC dropout."""
