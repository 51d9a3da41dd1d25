"""The baselines of the Prompt Diffuser paper (Table 1, Table 5 and Appendix F), each adapting a
frozen pre-trained :class:`~promptrl.methods.plm.PromptDT` with the same interface as
:class:`~promptrl.methods.diffuser.PromptDiffuser`: ``Method(plm, env=None, **hyperparams)``, ``learn(few_shot_data,
epochs, steps_per_epoch, callback, progress_bar, prompt_data, total_steps)``, ``generate_prompt(n, task=None)``, SB3-style
``predict``, ``num_parameters()`` / ``percentage()`` and self-contained ``save_pretrained`` /
``from_pretrained``.

=================== ==================================== =====================================
Table 1 column      class                                tuned parameters
=================== ==================================== =====================================
Prompt-DT-Expert    ``FixedPrompt(plm, quality="expert")`` 0
Prompt-DT-Random    ``FixedPrompt(plm, quality="random")`` 0
MT-ORL              ``MTORL(plm_without_prompt)``        0
Soft Prompt         ``SoftPrompt``                       3 K* E
Adaptor             ``Adaptor``                          n_layer (2 E h + h + 3 E), h = 16
Prompt-DT-FT        ``FineTune`` (few-shot data)         all of the PLM's
Prompt-Tuning DT    ``PromptTuningDT``                   K* (obs_dim + act_dim + 1)
Prompt-DT-FT-Full   ``FineTune`` (full data, 100 epochs) all of the PLM's
Table 5 "VAE"       ``VAEPromptGenerator``               encoder + decoder
=================== ==================================== =====================================
"""

from promptrl.methods.baselines.adaptor import Adaptor, BlockAdaptor
from promptrl.methods.baselines.finetune import FineTune
from promptrl.methods.baselines.fixed import MTORL, FixedPrompt
from promptrl.methods.baselines.prompt_tuning import PromptTuningDT
from promptrl.methods.baselines.soft_prompt import SoftPrompt
from promptrl.methods.baselines.vae import ConditionalVAE, VAEPromptGenerator

__all__ = [
    "MTORL",
    "Adaptor",
    "BlockAdaptor",
    "ConditionalVAE",
    "FineTune",
    "FixedPrompt",
    "PromptTuningDT",
    "SoftPrompt",
    "VAEPromptGenerator",
]
