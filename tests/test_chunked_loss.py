"""The chunked head + CE + KD loss equals the unfused path (values and gradients), on raw tensors and HF models."""

import pytest
import torch

from bbl.losses import distillation_loss, full_kl, reduce_kd, topk_renorm_kl, topk_tail_kl
from bbl.losses.chunked import KDTargets, chunked_head_loss

from .helpers import HEAD_SHAPE, head_loss_batch

B, S, H, V, K = (HEAD_SHAPE[x] for x in "BSHVK")


def _batch(temperature, seed=0, dtype=torch.float32):
    return head_loss_batch(temperature, seed, dtype, more_ignored=True, all_mass_row=True)


def _reference(kind, hidden, weight, labels, teacher, ids, top, tail, *, alpha, temperature, reduction):
    logits = hidden.float() @ weight.float().T
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                           ignore_index=-100)
    if kind is None:
        return ce, ce, None
    kl = {"topk_tail": lambda: topk_tail_kl(logits, ids, top, tail, temperature),
          "topk_renorm": lambda: topk_renorm_kl(logits, ids, top, tail, temperature),
          "full": lambda: full_kl(logits, teacher, temperature)}[kind]()
    kd = reduce_kd(kl, reduction)
    return distillation_loss(ce, kd, alpha=alpha, temperature=temperature), ce, kd


@pytest.mark.parametrize("kind", [None, "topk_tail", "topk_renorm", "full"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["token_mean", "babyllama"])
@pytest.mark.parametrize("chunk_rows", [4, 64])  # several chunks with a ragged last one, and a single chunk
def test_values_and_gradients_equal_the_unfused_losses(kind, temperature, reduction, chunk_rows):
    hidden, weight, labels, teacher, ids, top, tail = _batch(temperature)
    kd = None if kind is None else KDTargets(kind, ids, top, tail, teacher)
    loss, ce, kd_value = chunked_head_loss(hidden, weight, labels, kd=kd, alpha=0.3, temperature=temperature,
                                           reduction=reduction, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(loss, [hidden, weight])
    ref, ref_ce, ref_kd = _reference(kind, hidden, weight, labels, teacher, ids, top, tail, alpha=0.3,
                                     temperature=temperature, reduction=reduction)
    ref_grads = torch.autograd.grad(ref, [hidden, weight])
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce, ref_ce.detach(), rtol=1e-5, atol=1e-6)
    if kind is not None:
        torch.testing.assert_close(kd_value, ref_kd.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_gradient_scales_with_the_incoming_gradient():
    hidden, weight, labels, teacher, ids, top, tail = _batch(2.0)
    kd = KDTargets("topk_tail", ids, top, tail)
    loss, _, _ = chunked_head_loss(hidden, weight, labels, kd=kd, temperature=2.0)
    (g1,) = torch.autograd.grad(loss, hidden, retain_graph=True)
    (g3,) = torch.autograd.grad(loss * 3.0, hidden)
    torch.testing.assert_close(g3, 3 * g1)


def test_no_grad_gives_the_same_value_without_building_gradients():
    hidden, weight, labels, *_ = _batch(1.0)
    loss, ce, _ = chunked_head_loss(hidden, weight, labels)
    with torch.no_grad():
        loss_ng, ce_ng, _ = chunked_head_loss(hidden, weight, labels)
    assert not loss_ng.requires_grad and loss.requires_grad
    torch.testing.assert_close(loss_ng, loss.detach())


def test_bf16_inputs_get_fp32_sums_and_bf16_gradients():
    hidden, weight, labels, teacher, ids, top, tail = _batch(1.0, dtype=torch.bfloat16)
    loss, _, _ = chunked_head_loss(hidden, weight, labels, kd=KDTargets("topk_tail", ids, top, tail))
    gh, gw = torch.autograd.grad(loss, [hidden, weight])
    assert loss.dtype == torch.float32 and gh.dtype == gw.dtype == torch.bfloat16
    ref, *_ = _reference("topk_tail", hidden, weight, labels, teacher, ids, top, tail, alpha=0.5, temperature=1.0,
                         reduction="token_mean")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise():
    hidden, weight, labels, teacher, ids, top, tail = _batch(1.0)
    with pytest.raises(ValueError, match="temperature"):
        chunked_head_loss(hidden, weight, labels, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        chunked_head_loss(hidden, weight, labels, alpha=1.5)
    with pytest.raises(ValueError, match="reduction"):
        chunked_head_loss(hidden, weight, labels, reduction="mean")
    with pytest.raises(ValueError, match="outside"):
        chunked_head_loss(hidden, weight, labels, kd=KDTargets("topk_tail", ids + V, top, tail))
    with pytest.raises(ValueError, match="needs"):
        KDTargets("full")
    with pytest.raises(ValueError, match="unknown KD kind"):
        KDTargets("jsd", ids, top, tail)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_hf_models_chunked_equals_the_models_own_loss(architecture):
    """Through a real transformers model (GPT-2's head is tied to its embedding): loss and every parameter's grad."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                                   bos_token_id=0, eos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0,
                                                   attn_pdrop=0.0))  # no dropout: both passes see one model
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                             bos_token_id=0, eos_token_id=1))
    ids = torch.randint(0, V, (B, S))
    teacher = torch.randn(B, S, V)
    ref_out = model(input_ids=ids, labels=ids)
    kl = full_kl(ref_out.logits, teacher, 2.0)
    ref = distillation_loss(ref_out.loss, reduce_kd(kl), alpha=0.5, temperature=2.0)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    none = torch.empty(0, dtype=torch.long)
    out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=none)
    assert out.logits.shape[1] == 0  # the (B, S, V) logits are never computed
    loss, _, _ = chunked_head_loss(out.hidden_states[-1], model.get_output_embeddings().weight, ids,
                                   kd=KDTargets("full", teacher_logits=teacher), temperature=2.0)
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def _tiny_models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                                      eos_token_id=1)).eval()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                         bos_token_id=0, eos_token_id=1)).eval()
    return [gpt2, llama]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dump_ensemble_from_hidden_states_equals_the_logits_path(temperature):
    """The dump's chunked ensemble (hidden states, heads of different widths) equals `ensemble_topk` on logits."""
    from bbl.models.ensemble import ensemble_topk, ensemble_topk_from_hidden
    from bbl.models.teachers import teacher_forward

    models = _tiny_models()
    ids = torch.randint(0, V, (B, S))
    with torch.inference_mode():
        ref = ensemble_topk([m(input_ids=ids).logits for m in models], temperature=temperature, top_k=K)
        hidden, heads = zip(*(teacher_forward(m, ids) for m in models), strict=True)
        got = ensemble_topk_from_hidden(list(hidden), list(heads), temperature=temperature, top_k=K, chunk_rows=5)
    assert all(h.shape[-1] != V for h in hidden)  # hidden states, not logits
    assert torch.equal(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6)
