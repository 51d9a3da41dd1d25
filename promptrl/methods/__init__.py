"""Methods: the Prompt-DT (PLM), the shared base of the methods that adapt it, the prompt generators and the
baselines."""
