"""Networks: the Prompt-DT transformer (:mod:`promptrl.nn.transformer`) and the diffusion process with its noise
network (:mod:`promptrl.nn.diffusion`)."""
