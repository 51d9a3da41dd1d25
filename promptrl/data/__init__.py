"""Data: episodes, experts and their weights, rollouts, Minari datasets and the training windows of a Prompt-DT."""
