"""How training computes (kernels.py): padding-free attention keeps packed examples apart, the fused-loss path equals
the logits path, gradient checkpointing changes nothing but memory, each choice is logged, peak memory is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import torch.nn.functional as F  # noqa: E402

from service.providers.local import LocalTrainParams, train  # noqa: E402
from service.providers.local.chat_data import IGNORE_INDEX, TokenizedExample  # noqa: E402
from service.providers.local.errors import LocalTrainingError  # noqa: E402
from service.providers.local.kernels import choose_attention, prepare, varlen_kwargs  # noqa: E402
from service.providers.local.modeling import attach_lora, detect_target_modules, device_batch, loss_sum  # noqa: E402
from service.providers.local.packing import MicroBatch, collate  # noqa: E402

CPU = torch.device("cpu")


def example(length: int, targets: int, offset: int = 0) -> TokenizedExample:
    input_ids = [(offset + 7 * i) % 50 + 3 for i in range(length)]
    labels = [IGNORE_INDEX] * (length - targets) + input_ids[length - targets :]
    return TokenizedExample(input_ids=input_ids, labels=labels)


EXAMPLES = [example(n, t, offset=n) for n, t in [(9, 3), (14, 5), (6, 2), (11, 4), (7, 7), (5, 2)]]
PACKED = MicroBatch(rows=((0, 1, 2), (3, 4, 5)), packed=True)


def load_model(tiny_model_dir: Path, **params):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    kernels = prepare(model, LocalTrainParams(**params), CPU)
    torch.manual_seed(0)
    peft_model = attach_lora(model, LocalTrainParams(lora_dropout=0.0), detect_target_modules(model), "tiny")
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter
            torch.nn.init.normal_(param, std=0.1)
    return peft_model, kernels


def per_example_losses(model, batch: MicroBatch, width: int | None = None) -> tuple[list[float], list[list[int]]]:
    """Summed cross-entropy of each example of `batch`, in row order, and the target token ids each one counted."""
    collated = collate(batch, EXAMPLES, pad_id=0, width=width)
    inputs = {k: v for k, v in collated.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits.float()
    token_loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        collated["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(logits.shape[0], -1)
    losses, targets = [], []
    for r, row in enumerate(batch.rows):
        start = 0
        for index in row:
            end = start + len(EXAMPLES[index])
            # position p predicts token p + 1: an example's targets are the predictions from its own positions
            span_labels = collated["labels"][r, start + 1 : end]
            losses.append(float(token_loss[r, start : end - 1].sum()))
            targets.append([t for t in span_labels.tolist() if t != IGNORE_INDEX])
            start = end
    return losses, targets


def alone(model, index: int) -> tuple[float, list[int]]:
    losses, targets = per_example_losses(model, MicroBatch(rows=((index,),), packed=False))
    return losses[0], targets[0]


def test_flex_attention_keeps_packed_examples_apart_without_a_mask(tiny_model_dir: Path) -> None:
    """Per-example losses of packed rows under flex_attention's document mask (padded to one fixed width, as the
    trainer feeds it) equal each example's loss in a row of its own, and the same tokens carry loss."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    model, kernels = load_model(tiny_model_dir, attention="flex_attention")
    assert kernels.attention == "flex_attention" and kernels.fixed_width
    model.eval()
    packed_losses, packed_targets = per_example_losses(model, PACKED, width=48)
    model.base_model.model.set_attn_implementation("sdpa")
    for position, index in enumerate(i for row in PACKED.rows for i in row):
        loss, targets = alone(model, index)
        assert packed_losses[position] == pytest.approx(loss, rel=1e-4, abs=1e-5), index
        assert packed_targets[position] == targets == [t for t in EXAMPLES[index].labels[1:] if t != IGNORE_INDEX]


def test_without_the_document_mask_packed_examples_would_see_each_other(tiny_model_dir: Path) -> None:
    """The check above can fail: with position ids that do not restart, attention crosses examples."""
    model, _ = load_model(tiny_model_dir, attention="sdpa")
    model.eval()
    collated = collate(PACKED, EXAMPLES, pad_id=0)
    collated["position_ids"] = torch.arange(collated["input_ids"].shape[1]).expand_as(collated["input_ids"])
    with torch.no_grad():
        crossed = model(**{k: v for k, v in collated.items() if k != "labels"}, use_cache=False).logits
        kept = model(**{k: v for k, v in collate(PACKED, EXAMPLES, 0).items() if k != "labels"}, use_cache=False)
    second = slice(9, 23)  # the second example of the first row
    assert not torch.allclose(crossed[0, second], kept.logits[0, second], atol=1e-4)


def test_fused_loss_path_equals_the_logits_path(tiny_model_dir: Path) -> None:
    """The hidden-states path Liger's fused linear cross-entropy takes (here with a plain torch stand-in of the same
    contract, as Liger needs CUDA) gives the loss and gradients of the logits path."""
    model, _ = load_model(tiny_model_dir)

    def fused(weight, hidden, targets):
        return F.cross_entropy((hidden @ weight.T).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")

    results = {}
    for name, head in {"logits": None, "fused": fused}.items():
        model.zero_grad()
        batch = device_batch(collate(PACKED, EXAMPLES, pad_id=0), CPU)
        loss = loss_sum(model, batch, keep_logits=True, fused_loss=head)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        results[name] = (loss.item(), grads)
    assert results["fused"][0] == pytest.approx(results["logits"][0], rel=1e-5)
    assert torch.allclose(results["fused"][1], results["logits"][1], rtol=1e-4, atol=1e-5)
    assert results["fused"][1].abs().sum() > 0


def test_varlen_boundaries_come_from_host_position_ids() -> None:
    collated = collate(PACKED, EXAMPLES, pad_id=0, width=32)
    kwargs = varlen_kwargs(collated["position_ids"])
    # row 1: 9 + 14 + 6 = 29 tokens and 3 of padding; row 2: 11 + 7 + 5 = 23 tokens and 9 of padding
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 9, 23, 29, 32, 43, 50, 55, 64]
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 14


def test_attention_choice_per_device_and_clear_refusals() -> None:
    assert choose_attention("auto", CPU)[0] == "sdpa"
    assert choose_attention("flex_attention", CPU)[0] == "flex_attention"
    with pytest.raises(LocalTrainingError, match="flash_attention_2 needs a CUDA device"):
        choose_attention("flash_attention_2", CPU)


def test_speed_options_keep_the_run_fingerprint() -> None:
    """They change how fast the same computation runs, not the weights: a checkpoint stays resumable across them."""
    base = LocalTrainParams()
    fast = LocalTrainParams(attention="sdpa", liger_kernels=False, gradient_checkpointing=True, torch_compile=True)
    assert base.trajectory_fingerprint() == fast.trajectory_fingerprint()
    with pytest.raises(ValueError, match="attention"):
        LocalTrainParams(attention="paged")


def test_gradient_checkpointing_recomputes_layers_in_backward(tiny_model_dir: Path) -> None:
    counts = {}
    for on in (False, True):
        model, _ = load_model(tiny_model_dir, gradient_checkpointing=on)
        model.train()
        counts[on] = 0

        def count(*_: object, key: bool = on) -> None:
            counts[key] += 1

        model.get_base_model().model.layers[0].mlp.register_forward_pre_hook(count)
        loss_sum(model, collate(PACKED, EXAMPLES, pad_id=0), keep_logits=True).backward()
    assert counts == {False: 1, True: 2}


def _run(tiny_model_dir: Path, data: Path, out: Path, **params) -> tuple[list, object]:
    events: list = []
    result = train(
        LocalTrainParams(
            n_epochs=1, batch_size=2, max_seq_length=64, lora_r=4, lora_dropout=0.1, eval_every_steps=0, **params
        ),
        base_model=str(tiny_model_dir),
        train_path=data,
        output_dir=out,
        cache_dir=out.parent / "cache",
        device="cpu",
        num_threads=1,
        on_event=events.append,
    )
    return events, result


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir, jsonl, memorisable, tmp_path) -> None:
    from safetensors.torch import load_file

    data = jsonl("train.jsonl", memorisable(12))
    plain_events, plain = _run(tiny_model_dir, data, tmp_path / "plain")
    ckpt_events, ckpt = _run(tiny_model_dir, data, tmp_path / "ckpt", gradient_checkpointing=True)
    plain_losses = [e.train_loss for e in plain_events if e.type == "step"]
    ckpt_losses = [e.train_loss for e in ckpt_events if e.type == "step"]
    assert ckpt_losses == pytest.approx(plain_losses, rel=1e-5)
    left = load_file(str(plain.adapter_path / "adapter_model.safetensors"))
    right = load_file(str(ckpt.adapter_path / "adapter_model.safetensors"))
    assert left.keys() == right.keys() and all(torch.allclose(left[k], right[k], atol=1e-6) for k in left)
    note = next(e for e in ckpt_events if e.type == "message" and "Attention:" in e.message)
    assert "Gradient checkpointing: on" in note.message and note.data["gradient_checkpointing"] is True


def test_kernel_choices_are_logged_and_peak_memory_recorded(tiny_model_dir, jsonl, memorisable, tmp_path) -> None:
    events, result = _run(tiny_model_dir, jsonl("train.jsonl", memorisable(6)), tmp_path / "run")
    note = next(e for e in events if e.type == "message" and "Attention:" in e.message)
    assert "Attention: sdpa" in note.message
    assert "Liger kernels: skipped, they are Triton kernels for CUDA and this run is on cpu" in note.message
    assert note.data == {
        "attention": "sdpa",
        "liger_kernels": False,
        "fused_linear_cross_entropy": False,
        "gradient_checkpointing": False,
        "torch_compile": False,
    }
    steps = [e for e in events if e.type == "step"]
    assert steps and all(e.peak_gpu_memory_bytes is None for e in steps)  # no CUDA here
    assert all(e.peak_process_rss_bytes and e.peak_process_rss_bytes > 50 * 2**20 for e in steps)
    assert result.peak_process_rss_bytes >= steps[-1].peak_process_rss_bytes


def test_the_loop_reads_the_device_once_per_step_whatever_the_accumulation(
    tiny_model_dir, jsonl, memorisable, tmp_path, monkeypatch
) -> None:
    """A read of a device tensor (item, float, tolist) stops the host until the device catches up. The trainer's own
    code makes one per optimizer step (the loss and gradient norm together), none per micro-batch: this is what kept
    it CPU-bound on the GPU where the bench's bare loop was not."""
    import sys

    reads: list[str] = []
    for name in ("item", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "providers/local" in caller.replace("\\", "/"):
                reads.append(f"{_name} in {Path(caller).name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    events, _ = _run(
        tiny_model_dir, jsonl("train.jsonl", memorisable(12)), tmp_path / "run", gradient_accumulation_steps=2
    )
    steps = [e for e in events if e.type == "step"]
    assert len(steps) >= 2
    assert reads == ["tolist in trainer.py"] * len(steps)
