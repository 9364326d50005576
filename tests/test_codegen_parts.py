"""Codegen parts checked without a trained bundle: per-file perplexity, the best epoch a training
checkpoint keeps, and the KV-cache decoder wrapper."""

import numpy as np
import pytest


def test_per_file_losses_add_up_to_the_whole():
    from applied_aitk.usecases.codegen.evaluation import per_file, summarize

    # files of 3, 4 and 2 tokens: the stream's tokens 2..9 are predicted (entries 0..7)
    losses = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    tokens, loss = per_file(losses, [3, 4, 2])
    assert tokens.tolist() == [2, 4, 2] and loss.tolist() == [1.5, 4.5, 7.5]
    assert (tokens * loss).sum() / tokens.sum() == pytest.approx(summarize(losses)["loss"])
    tokens, loss = per_file(losses[:3], [3, 4, 2])  # max_tokens: the last files not reached
    assert tokens.tolist() == [2, 1, 0] and np.isnan(loss[2])


def test_fit_keeps_the_best_epoch_current_and_a_checkpoint_restores_it_old_ones_too():
    from dataclasses import asdict

    import torch

    from applied_aitk.train import fit
    from applied_aitk.usecases.codegen.trainer import _fit_state

    scores, seen = iter([3.0, 1.0, 2.0]), []
    result = fit(torch.nn.Linear(1, 1), lambda epoch: [0], lambda batch: 0.5, lambda: {"val_loss": next(scores)}, epochs=3,
                 on_epoch=lambda done, early: seen.append((done.best_epoch, done.best, early.bad_epochs)))
    assert seen == [(1, 3.0, 0), (2, 1.0, 0), (2, 1.0, 1)] and (result.best_epoch, result.best) == (2, 1.0)
    restored, stopper = _fit_state({"result": asdict(result), "early_stopping": {"bad_epochs": 1}})
    assert (restored.best_epoch, restored.best, stopper.best_epoch, stopper.best, stopper.bad_epochs) == (2, 1.0, 1, 1.0, 1)
    old = {"result": {**asdict(result), "best_epoch": 0, "best": None}, "early_stopping": {"best": 1.0, "best_epoch": 1, "bad_epochs": 1}}
    restored, stopper = _fit_state(old)  # a checkpoint written before: early stopping held the best, 0-based
    assert (restored.best_epoch, restored.best, stopper.best_epoch, stopper.best) == (2, 1.0, 1, 1.0)


def test_the_kv_cache_graph_passes_the_cache_without_a_deprecation_warning():
    import warnings

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from applied_aitk.usecases.codegen.model import KVDecoder

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)).eval()
    ids = torch.tensor([[5, 6, 7]])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", FutureWarning)
        logits, key, value = KVDecoder(model, 32)(ids, torch.ones_like(ids), torch.arange(3)[None], *[torch.zeros(1, 2, 0, 8)] * 2)
        step = KVDecoder(model, 32)(ids[:, -1:] + 1, torch.ones(1, 4, dtype=torch.long), torch.tensor([[3]]), key, value)[0]
        full = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits[:, -1]
    assert logits.shape == (1, 64) and key.shape == (1, 2, 3, 8)
    assert torch.allclose(step, full, atol=1e-5)  # the cache really carried the first three tokens


def test_a_prompt_id_that_is_an_object_a_list_or_true_false_is_an_error_row(tmp_path):
    from applied_aitk.usecases.codegen.data import read_prompt_records

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "id": {"x": 1}}\n{"prompt": "b", "task_id": [1]}\n{"prompt": "c", "id": true}\n{"prompt": "d", "id": 7}\n')
    records = [(r.id, r.error) for r in read_prompt_records([path])]  # was: the id "{'x': 1}", Python's text of the object
    assert records == [
        (f"{path}:1", f"{path}:1: field id: expected text or a number, got an object"),
        (f"{path}:2", f"{path}:2: field id: expected text or a number, got a list"),
        (f"{path}:3", f"{path}:3: field id: expected text or a number, got true/false"),
        ("7", None),
    ]
