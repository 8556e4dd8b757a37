"""Heavy-tailed self-regularization (HT-SR) diagnostics of weight matrices."""
