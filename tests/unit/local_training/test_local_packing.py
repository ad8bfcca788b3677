"""Batch planning and packing: every example once per epoch, little padding, and the same loss as padded batches."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from service.providers.local.chat_data import IGNORE_INDEX, TokenizedExample  # noqa: E402
from service.providers.local.packing import (  # noqa: E402
    MicroBatch,
    collate,
    count_targets,
    pack_rows,
    padding_share,
    plan_epoch,
)


def example(length: int, targets: int, offset: int = 0) -> TokenizedExample:
    input_ids = [(offset + i) % 50 + 3 for i in range(length)]
    labels = [IGNORE_INDEX] * (length - targets) + input_ids[length - targets :]
    return TokenizedExample(input_ids=input_ids, labels=labels)


def test_best_fit_never_overflows_and_uses_few_rows() -> None:
    lengths = [30, 10, 25, 40, 5, 35, 20, 15, 50, 10]
    rows = pack_rows(list(range(len(lengths))), lengths, capacity=64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) == -(-sum(lengths) // 64)  # the lower bound is reached here
    with pytest.raises(ValueError, match="more than the row capacity"):
        pack_rows([0], [65], capacity=64)


@pytest.mark.parametrize("packing", [True, False])
def test_each_epoch_covers_every_example_once_and_is_reproducible(packing: bool) -> None:
    lengths = [(i * 37) % 90 + 5 for i in range(101)]
    plans = [
        plan_epoch(lengths, batch_size=3, max_seq_length=128, packing=packing, seed=7, epoch=epoch) for epoch in (0, 1)
    ]
    for plan in plans:
        assert sorted(i for batch in plan for row in batch.rows for i in row) == list(range(101))
        assert all(len(batch.rows) <= 3 for batch in plan)
    assert plans[0] != plans[1]  # reshuffled per epoch
    assert plans[0] == plan_epoch(lengths, batch_size=3, max_seq_length=128, packing=packing, seed=7, epoch=0)
    assert plans[0] != plan_epoch(lengths, batch_size=3, max_seq_length=128, packing=packing, seed=8, epoch=0)


def test_packing_and_bucketing_waste_less_than_naive_padding() -> None:
    lengths = [(i * 37) % 200 + 10 for i in range(400)]
    packed = plan_epoch(lengths, batch_size=4, max_seq_length=512, packing=True, seed=1, epoch=0)
    bucketed = plan_epoch(lengths, batch_size=4, max_seq_length=512, packing=False, seed=1, epoch=0)
    naive = [MicroBatch(rows=tuple((i,) for i in range(s, min(s + 4, 400))), packed=False) for s in range(0, 400, 4)]
    assert padding_share(packed, lengths) < 0.02
    assert padding_share(bucketed, lengths) < 0.05
    assert padding_share(naive, lengths) > 0.25


def test_collate_restarts_positions_per_example_and_ignores_each_first_label() -> None:
    examples = [example(4, 2), example(3, 1, offset=10), example(2, 1, offset=20)]
    batch = collate(MicroBatch(rows=((0, 1), (2,)), packed=True), examples, pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4]]
    assert "attention_mask" not in batch
    first_label_of_second_example = batch["labels"][0, 4].item()
    assert first_label_of_second_example == IGNORE_INDEX
    assert batch["labels"][1, 2:].tolist() == [IGNORE_INDEX] * 5
    assert batch["input_ids"][1, 2:].tolist() == [0] * 5
    assert count_targets(MicroBatch(rows=((0, 1), (2,)), packed=True), examples) == 4

    padded = collate(MicroBatch(rows=((0,), (2,)), packed=False), examples, pad_id=0)
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert "position_ids" not in padded


def _lora_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from service.providers.local.modeling import attach_lora, detect_target_modules
    from service.providers.local.params import LocalTrainParams

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = attach_lora(model, LocalTrainParams(lora_dropout=0.0), detect_target_modules(model), "tiny")
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter so its gradients are compared too
            torch.nn.init.normal_(param, std=0.1)
    return peft_model


@pytest.mark.parametrize("keep_logits", [True, False])
def test_packed_rows_give_the_same_loss_and_gradients_as_padded_batches(tiny_model_dir, keep_logits: bool) -> None:
    from service.providers.local.modeling import loss_sum

    model = _lora_model(tiny_model_dir)
    model.eval()  # no dropout: the two layouts must be the same computation
    examples = [example(n, t, offset=n) for n, t in [(9, 3), (14, 5), (6, 2), (11, 4), (7, 7)]]
    layouts = {
        "packed": MicroBatch(rows=((0, 1, 2), (3, 4)), packed=True),
        "padded": MicroBatch(rows=tuple((i,) for i in range(5)), packed=False),
    }
    losses, grads = {}, {}
    for name, layout in layouts.items():
        model.zero_grad()
        loss = loss_sum(model, collate(layout, examples, pad_id=0), keep_logits=keep_logits)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    singles = sum(
        loss_sum(model, collate(MicroBatch(rows=((i,),), packed=False), examples, 0), keep_logits=True).item()
        for i in range(5)
    )
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)
    assert losses["packed"] == pytest.approx(singles, rel=1e-5)
    # fp32 sums in another order: differences ~1e-5 on gradients of magnitude ~10
    assert torch.allclose(grads["packed"], grads["padded"], rtol=1e-4, atol=1e-4)
    assert grads["packed"].abs().sum() > 0
