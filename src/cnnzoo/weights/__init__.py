"""Loaders for published weights (converted into cnnzoo's models without unpickling code)."""
