import pytest
import torch

from promptrl.data.windows import Segment
from promptrl.nn.transformer import PromptDTConfig, PromptDTNetwork

OBS, ACT = 5, 3


def segment(B, L, seed, pad=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L)
    mask[:, :pad] = 0
    return Segment(
        torch.randn(B, L, OBS, generator=g),
        torch.rand(B, L, ACT, generator=g) * 2 - 1,
        torch.randn(B, L, 1, generator=g),
        torch.arange(L).repeat(B, 1),
        mask,
    )


@pytest.fixture
def net():
    torch.manual_seed(0)
    return PromptDTNetwork(
        PromptDTConfig(OBS, ACT, embed_dim=32, n_layer=2, n_head=2, context=6, prompt_length=3)
    ).eval()


def test_shapes(net):
    out = net(segment(4, 6, 0), segment(4, 3, 1))
    assert out.shape == (4, 6, ACT) and out.abs().max() <= 1


def test_causal(net):
    """Changing step t's tokens (and later) leaves the predictions for earlier steps unchanged."""
    h, p = segment(2, 6, 0), segment(2, 3, 1)
    changed = Segment(*(x.clone() for x in h))
    changed.states[:, 4:] += 3.0
    changed.actions[:, 3:] = 0.5  # the action at step 3 is predicted from tokens before it
    changed.rtg[:, 4:] -= 1.0
    a, b = net(h, p), net(changed, p)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_prompt_changes_output(net):
    h = segment(2, 6, 0)
    assert not torch.allclose(net(h, segment(2, 3, 1)), net(h, segment(2, 3, 2)))


def test_padding_is_ignored(net):
    """Left-padded steps do not influence the real ones, whatever they hold."""
    h, p = segment(2, 6, 0, pad=2), segment(2, 3, 1)
    other = Segment(*(x.clone() for x in h))
    other.states[:, :2] = 100.0
    torch.testing.assert_close(net(h, p)[:, 2:], net(other, p)[:, 2:])
    assert torch.isfinite(net(h, p)).all()


class FullThenSelect(torch.nn.Module):
    """A block that computes every token's output and only then keeps ``rows``: the reference for the shortcut."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, attn_mask, rows=None):
        out = self.block(x, attn_mask)
        return out if rows is None else out[:, rows]


def test_final_block_computes_only_the_rows_it_needs(net):
    """The final block's query subset (the history's state tokens) gives what computing every token gives."""
    import copy

    reference = copy.deepcopy(net)
    reference.blocks[-1] = FullThenSelect(reference.blocks[-1])
    h, p = segment(3, 6, 0, pad=2), segment(3, 3, 1)
    torch.testing.assert_close(net(h, p), reference(h, p))
    torch.testing.assert_close(net(h, p, last_only=True), reference(h, p, last_only=True))


def test_last_only_is_the_last_step_of_the_full_forward(net):
    """Inference's shortcut (the final block for the last state token only) gives the same action:
    with a prompt segment, with padding, with soft prompt tokens, and without a prompt (MT-ORL)."""
    h, p = segment(3, 6, 0, pad=2), segment(3, 3, 1)
    torch.testing.assert_close(net(h, p, last_only=True), net(h, p)[:, -1:])
    tokens = torch.randn(3, 9, 32)
    torch.testing.assert_close(net(h, prompt_tokens=tokens, last_only=True), net(h, prompt_tokens=tokens)[:, -1:])
    mt = PromptDTNetwork(PromptDTConfig(OBS, ACT, embed_dim=16, n_layer=1, use_prompt=False)).eval()
    torch.testing.assert_close(mt(h, last_only=True), mt(h)[:, -1:])


def test_mt_orl_needs_no_prompt():
    net = PromptDTNetwork(PromptDTConfig(OBS, ACT, embed_dim=16, n_layer=1, use_prompt=False))
    assert net(segment(2, 6, 0)).shape == (2, 6, ACT)
    with pytest.raises(ValueError, match="pass a prompt segment"):
        PromptDTNetwork(PromptDTConfig(OBS, ACT, embed_dim=16, n_layer=1))(segment(2, 6, 0))


def test_bad_config():
    with pytest.raises(ValueError, match="divisible by n_head"):
        PromptDTNetwork(PromptDTConfig(OBS, ACT, embed_dim=30, n_head=4))
    with pytest.raises(ValueError, match=r"n_layer must be an integer >= 1 and <= 1024, got 0"):
        PromptDTNetwork(PromptDTConfig(OBS, ACT, n_layer=0))
