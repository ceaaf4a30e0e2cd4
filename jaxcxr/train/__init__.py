"""Training loops, one module per model family: pure jitted `*_step` functions and a thin loop."""
