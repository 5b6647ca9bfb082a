"""Model twins: the same file names, classes, attribute names and statement order in torch_ref/ and paddle_impl/."""
