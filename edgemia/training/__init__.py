"""Training stage: model architectures and the recipe that trains the target."""
