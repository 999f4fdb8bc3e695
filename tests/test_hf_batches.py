"""Hugging Face dict batches end to end: ``labels`` in the batch, ``loss`` and ``logits`` in the output. A
sequence classifier and a causal LM train with the built-in loss (no user loss), accuracy reads dict batches,
and ``perplexity`` is a registered metric."""

from __future__ import annotations

import math

import pytest
import torch
from hf_families import VOCAB, build, inputs

from autoprune.evaluate import resolve_loss, train
from autoprune.metrics import accuracy, perplexity, resolve_metric

pytest.importorskip("transformers")


def _classification_batches(count: int = 4) -> list[dict[str, torch.Tensor]]:
    """A learnable task: the label is whether token 5 appears in the sequence."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        ids = torch.randint(6, VOCAB, (8, 8), generator=g)
        labels = torch.arange(8) % 3
        ids[labels == 1, 2] = 5
        ids[labels == 2, 4] = 4
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def test_the_builtin_loss_on_a_labels_batch_is_the_models_own_loss():
    model, batch = build("bert"), _classification_batches(1)[0]
    loss = resolve_loss("cross_entropy")(model, batch)
    with torch.no_grad():
        own = model(**batch).loss
    torch.testing.assert_close(loss.detach(), own)
    # A criterion with options reads the logits and the labels instead.
    smoothed = resolve_loss("label_smoothing", {"smoothing": 0.2})(model, batch)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=0.2)
    torch.testing.assert_close(smoothed, expected)


def test_a_sequence_classifier_trains_and_scores_on_dict_batches_without_a_user_loss():
    model, batches = build("bert"), _classification_batches()
    before = accuracy(model, batches)
    model.train()
    last = train(model, batches, epochs=30, lr=0.05)
    after = accuracy(model, batches)
    assert math.isfinite(last) and after >= before + 0.3
    with torch.no_grad():
        logits = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    assert after == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def _lm_batches() -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in range(3):
        ids = inputs("llama", batch=4, length=10 + seed)["input_ids"]
        labels = ids.clone()
        labels[:, :2] = -100  # not scored
        batches.append({"input_ids": ids, "labels": labels})
    return batches


def test_perplexity_is_a_registered_metric_equal_to_the_causal_lm_loss_negated():
    model, batches = build("llama"), _lm_batches()
    assert resolve_metric("perplexity") is perplexity
    value = perplexity(model, batches[:1])
    with torch.no_grad():
        own = model(**batches[0]).loss  # transformers' shifted next-token loss, -100 ignored
    assert value == pytest.approx(-math.exp(float(own)), rel=1e-5)
    assert 1 < -value < 10 * VOCAB


def test_a_causal_lm_fine_tunes_with_the_builtin_loss_and_its_perplexity_improves():
    model, batches = build("llama"), _lm_batches()
    before = perplexity(model, batches)
    model.train()
    train(model, batches, epochs=8, lr=0.05)
    assert perplexity(model, batches) > before  # negated: higher is better


def test_taylor_scores_mlp_width_from_the_models_own_loss_on_labels_batches():
    from autoprune import PruningPlan, apply_plan

    model, batches = build("bert"), _classification_batches(2)
    group = "bert.encoder.layer.0.intermediate.dense"
    x = {k: v for k, v in batches[0].items() if k != "labels"}
    pruned, report = apply_plan(model, x, PruningPlan({group: (0.5, "taylor")}), gradient_batches=batches)
    assert report.channels[group] == (64, 32)
    # The same ranking by hand: (sum over each row of grad * weight)^2, the gradient averaged over the batches.
    reference = build("bert")
    reference.eval()
    for batch in batches:
        reference(**batch).loss.backward()
    dense = reference.bert.encoder.layer[0].intermediate.dense
    scores = ((dense.weight.grad / len(batches)).double() * dense.weight.double()).sum(dim=1).pow(2)
    kept = sorted(torch.argsort(scores, stable=True)[32:].tolist())
    torch.testing.assert_close(pruned.bert.encoder.layer[0].intermediate.dense.weight, dense.weight.detach()[kept])
