"""Runtime stage: run exported models on a backend and capture their outputs."""
