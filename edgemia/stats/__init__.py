"""Statistics stage: ROC metrics of membership scores."""
