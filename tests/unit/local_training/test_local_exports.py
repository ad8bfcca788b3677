"""Exports of a local fine-tune: the adapter as vLLM / SGLang read it, the merged model, and the Ollama bundle, built
from one real (tiny) training run; the exported adapter applied by peft answers like the exported merged model; the
Modelfile parses under Ollama's documented syntax; and the API that builds and serves them."""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from service.providers.local import LocalTrainParams, train  # noqa: E402
from service.providers.local import exports as ex  # noqa: E402

MODEL_NAME = "ft:tiny-llama:acme::job_01EXPORTTEST"
# Question -> colour pairs in the words the tiny tokenizer was built from (tests/unit/local_training/conftest.py).
ANSWERS = {"sky": "blue", "leaf": "green", "snow": "white", "coal": "black", "ruby": "red", "plum": "violet"}


def _examples() -> str:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer with one colour."},
                {"role": "user", "content": f"What colour is the {thing}?"},
                {"role": "assistant", "content": colour},
            ]
        }
        for thing, colour in ANSWERS.items()
    ]
    return "".join(json.dumps(row) + "\n" for row in rows * 2)


# ----- Ollama's Modelfile syntax, as its reference documents it (an independent reader for what we write) -----

INSTRUCTIONS = {"from", "adapter", "template", "system", "parameter", "message", "license", "requires"}


class ModelfileError(ValueError):
    pass


def parse_modelfile(text: str) -> list[tuple[str, list[str]]]:
    """(instruction, arguments) pairs. Instructions are case-insensitive; `#` starts a comment line; a value is the
    rest of the line, a "double-quoted" string, or a \"\"\"triple-quoted\"\"\" one that may span lines. PARAMETER
    takes a name and a value, MESSAGE a role and a value."""
    out: list[tuple[str, list[str]]] = []
    rest = text
    while rest:
        line, _, after = rest.partition("\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            rest = after
            continue
        word, _, args = stripped.partition(" ")
        name = word.lower()
        if name not in INSTRUCTIONS:
            raise ModelfileError(f"unknown instruction {word!r}")
        args = args.lstrip()
        head: list[str] = []
        if name in ("parameter", "message"):
            key, _, args = args.partition(" ")
            if not key:
                raise ModelfileError(f"{word} needs a name and a value")
            head, args = [key], args.lstrip()
        if args.startswith('"""'):
            body = args[3:] + "\n" + after
            end = body.find('"""')
            if end < 0:
                raise ModelfileError(f"unterminated triple-quoted value of {word}")
            value = body[:end]
            trailing, _, rest = body[end + 3 :].partition("\n")
            if trailing.strip():
                raise ModelfileError(f"text after the closing quotes of {word}: {trailing!r}")
        elif args.startswith('"'):
            match = re.fullmatch(r'"((?:[^"\\]|\\.)*)"\s*', args)
            if match is None:
                raise ModelfileError(f"unterminated quoted value of {word}")
            value, rest = re.sub(r"\\(.)", r"\1", match[1]), after
        else:
            value, rest = args.strip(), after
        if not value and name != "system":
            raise ModelfileError(f"{word} needs a value")
        out.append((name, [*head, value]))
    return out


def test_the_modelfile_reader_follows_the_documented_syntax() -> None:
    text = (
        "# a comment\n"
        "from llama3.2\n"
        "Adapter ./adapter\n"
        'PARAMETER stop "<|im_end|>"\n'
        "parameter temperature 0.2\n"
        'TEMPLATE """{{ if .System }}sys\n{{ .System }}{{ end }}\n"""\n'
        'SYSTEM """You answer\nwith one colour."""\n'
        'MESSAGE user "Say \\"hi\\""\n'
    )
    assert parse_modelfile(text) == [
        ("from", ["llama3.2"]),
        ("adapter", ["./adapter"]),
        ("parameter", ["stop", "<|im_end|>"]),
        ("parameter", ["temperature", "0.2"]),
        ("template", ["{{ if .System }}sys\n{{ .System }}{{ end }}\n"]),
        ("system", ["You answer\nwith one colour."]),
        ("message", ["user", 'Say "hi"']),
    ]
    for bad in ('TEMPLATE """never closed\n', "FROMM llama3\n", 'SYSTEM "open\n', "PARAMETER\n", "FROM\n"):
        with pytest.raises(ModelfileError):
            parse_modelfile(bad)


# Ollama's model names: `model:tag`, each part a letter, digit or underscore then up to 79 of those, `.` and `-`.
OLLAMA_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")


@pytest.mark.parametrize(
    "name",
    [MODEL_NAME, "ft:HuggingFaceTB--SmolLM2-135M:acme-corp:v2.1:job_01ABC", "ft:x:y:z:job_1", "plain-name"],
)
def test_ollama_names_are_valid_and_keep_the_job_id(name: str) -> None:
    converted = ex.ollama_name(name)
    model, tag = converted.split(":")
    assert OLLAMA_PART.match(model) and OLLAMA_PART.match(tag) and converted == converted.lower()
    if name.startswith("ft:"):
        assert tag == name.rsplit(":", 1)[1].lower()


# ----- one trained run, exported three ways -----


@pytest.fixture(scope="module")
def run_output(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:

    root = tmp_path_factory.mktemp("export-run")
    data = root / "train.jsonl"
    data.write_text(_examples())
    params = LocalTrainParams(
        n_epochs=15, batch_size=4, learning_rate=3e-2, lora_r=8, lora_dropout=0.0, eval_every_steps=0, max_seq_length=64
    )
    result = train(params, base_model=str(tiny_model_dir), train_path=data, output_dir=root / "output",
                   cache_dir=root / "cache", device="cpu", num_threads=1)  # fmt: skip
    assert result.status == "succeeded" and not (root / "output" / "merged").exists()
    return root / "output"


@pytest.fixture(scope="module")
def built(run_output: Path) -> dict[str, Path]:
    target = ex.ExportTarget(output_dir=run_output, model_name=MODEL_NAME, cache_dir=run_output.parent / "cache")
    paths = {}
    for fmt in ("vllm", "ollama", "merged"):  # a folder base has no GGUF export
        status = ex.start_export(target, fmt, archive=f"job_01EXPORTTEST-{fmt}.tar", wait=True)
        assert status.state == "ready", status
        paths[fmt] = status.path
    return paths


def _logits_and_greedy(model: Any, prompt: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    with torch.no_grad():
        logits = model(prompt).logits
        generated = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    return logits, generated[0, prompt.shape[1] :].tolist()


def test_the_exported_adapter_on_its_base_answers_like_the_exported_merged_model(
    built: dict[str, Path], tiny_tokenizer: Any
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vllm = built["vllm"]
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Answer with one colour."}, {"role": "user", "content": "What colour is the sky?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    base_logits, _ = _logits_and_greedy(AutoModelForCausalLM.from_pretrained(str(vllm / "base")), prompt)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(vllm / "base")), str(vllm / "adapter"))
    adapted.eval()
    adapted_logits, adapted_tokens = _logits_and_greedy(adapted, prompt)
    merged_logits, merged_tokens = _logits_and_greedy(AutoModelForCausalLM.from_pretrained(str(built["merged"])), prompt)

    assert (adapted_logits - base_logits).abs().max() > 0.1  # the export carries the trained weights
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4), (merged_logits - adapted_logits).abs().max()
    # Greedy decoding gives the same answer, a learned colour, then the end of the turn.
    assert merged_tokens == adapted_tokens and merged_tokens[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(merged_tokens, skip_special_tokens=True).strip() == ANSWERS["sky"]
    merged_tokenizer_config = json.loads((built["merged"] / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (
        merged_tokenizer_config.get("chat_template") or (built["merged"] / "chat_template.jinja").read_text()
    )


def test_the_vllm_bundle_has_what_vllm_and_sglang_read(built: dict[str, Path], run_output: Path) -> None:
    from safetensors import safe_open

    adapter = built["vllm"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["target_modules"]
    # The base ships along (a local folder is not on the user's machine) and the config names it as served.
    assert config["base_model_name_or_path"] == "vllm/base"
    assert (built["vllm"] / "base" / "config.json").is_file() and (built["vllm"] / "base" / "model.safetensors").is_file()
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    # vLLM maps PEFT's names (base_model.model.<module>.lora_A.weight) onto its own layers.
    assert keys and all(re.match(r"^base_model\.model\..+\.lora_[AB]\.weight$", k) for k in keys), keys[:4]
    usage = (built["vllm"] / "USAGE.md").read_text()
    assert f"vllm serve vllm/base --enable-lora --lora-modules {MODEL_NAME}=vllm/adapter" in usage
    assert f"--lora-paths {MODEL_NAME}=vllm/adapter" in usage
    # The trainer's own adapter keeps the base as the job named it.
    original = json.loads((run_output / "adapter" / "adapter_config.json").read_text())
    assert original["base_model_name_or_path"] != "vllm/base"


def test_a_hub_base_is_named_not_bundled_and_a_large_rank_is_declared(tmp_path: Path) -> None:
    commands = ex.usage_commands("vllm", model_name=MODEL_NAME, base="Qwen/Qwen2.5-0.5B", archive="j.tar", lora_rank=64)
    assert commands[1] == f"vllm serve Qwen/Qwen2.5-0.5B --enable-lora --lora-modules {MODEL_NAME}=vllm/adapter " \
        "--max-lora-rank 64"  # fmt: skip
    assert "--model-path Qwen/Qwen2.5-0.5B" in commands[2] and commands[2].endswith("--max-lora-rank 64")


def test_the_ollama_bundle_parses_and_points_at_what_it_carries(built: dict[str, Path]) -> None:
    bundle = built["ollama"]
    parsed = parse_modelfile((bundle / "Modelfile").read_text())
    by_name: dict[str, list[list[str]]] = {}
    for name, args in parsed:
        by_name.setdefault(name, []).append(args)
    [[base]], [[adapter]] = by_name["from"], by_name["adapter"]
    assert (bundle / base / "config.json").is_file() and any((bundle / base).glob("*.safetensors"))
    assert (bundle / adapter / "adapter_config.json").is_file()
    assert (bundle / adapter / "adapter_model.safetensors").is_file()
    # The run trained with ChatML: Ollama gets the same turns and stops at the end of the answer.
    [[template]] = by_name["template"]
    assert template.startswith("{{- if .System }}<|im_start|>system\n") and template.endswith("<|im_start|>assistant\n")
    assert ["stop", "<|im_end|>"] in by_name["parameter"]
    usage = (bundle / "USAGE.md").read_text()
    assert f"ollama create {ex.ollama_name(MODEL_NAME)} -f Modelfile" in usage


def test_a_gguf_base_is_bundled_as_the_file_itself(tmp_path: Path) -> None:
    text = ex.modelfile_text(from_="./base.gguf", adapter="./adapter", chat_template="{{ x }}", model_name=MODEL_NAME)
    assert parse_modelfile(text) == [("from", ["./base.gguf"]), ("adapter", ["./adapter"])]


def test_exports_are_not_rebuilt_and_a_failure_is_reported_then_retried(run_output: Path, tmp_path: Path) -> None:
    import shutil

    output = tmp_path / "output"
    shutil.copytree(run_output / "adapter", output / "adapter")
    config = json.loads((output / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")  # the base folder was removed
    (output / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    target = ex.ExportTarget(output_dir=output, model_name=MODEL_NAME, cache_dir=tmp_path / "cache")

    failed = ex.start_export(target, "vllm", archive="a.tar", wait=True)
    assert failed.state == "failed" and "gone" in (failed.error or "") and failed.failed_at is not None
    assert ex.export_status(output, "vllm").state == "failed"
    assert not list((output / "exports").glob(".vllm.tmp-*"))  # nothing half-built is left behind

    # The base is back: the next start builds it again, and the failure report goes.
    config["base_model_name_or_path"] = json.loads((run_output / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    (output / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    (output / "exports" / ".vllm.tmp-0dead000").mkdir()  # what a build whose process died leaves
    readied: list[bool] = []
    target = ex.ExportTarget(output, MODEL_NAME, tmp_path / "cache", on_ready=lambda: readied.append(True))
    ready = ex.start_export(target, "vllm", archive="a.tar", wait=True)
    assert ready.state == "ready" and ex.export_status(output, "vllm").error is None and readied == [True]
    assert not (output / "exports" / ".vllm.tmp-0dead000").exists()
    stamp = (ready.path / "adapter" / "adapter_config.json").stat().st_mtime_ns
    assert ex.start_export(target, "vllm", archive="a.tar", wait=True).state == "ready" and readied == [True]
    assert (ready.path / "adapter" / "adapter_config.json").stat().st_mtime_ns == stamp  # cached, not rebuilt

    with pytest.raises(ex.ExportError, match="no adapter"):
        ex.start_export(ex.ExportTarget(tmp_path / "empty", MODEL_NAME, tmp_path), "vllm", archive="a.tar")


def test_one_build_at_a_time_and_a_status_while_it_runs(run_output: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    output = tmp_path / "output"
    shutil.copytree(run_output / "adapter", output / "adapter")
    target = ex.ExportTarget(output_dir=output, model_name=MODEL_NAME, cache_dir=tmp_path / "cache")
    release, calls = threading.Event(), []

    def slow_build(t: ex.ExportTarget, archive: str) -> Path:
        calls.append(archive)
        release.wait(10)
        return ex.build_vllm(t, archive)

    monkeypatch.setitem(ex.BUILDERS, "vllm", slow_build)
    assert ex.start_export(target, "vllm", archive="a.tar").state == "building"
    wait_for(lambda: calls, timeout=5)
    assert ex.start_export(target, "vllm", archive="a.tar").state == "building"
    assert ex.export_status(output, "vllm").state == "building" and ex.export_status(output, "ollama").state == (
        "not_started"
    )
    release.set()
    wait_for(lambda: ex.export_status(output, "vllm").state == "ready", timeout=10)
    assert calls == ["a.tar"]


# ----- the API -----


def _extract(body: bytes, into: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = archive.getnames()
        archive.extractall(into, filter="data")
    return names


def test_exports_over_the_api(client, project, other_project, worker, tiny_model_dir, memorisable, tmp_path) -> None:
    h = project["headers"]
    content = "".join(json.dumps(r) + "\n" for r in memorisable(12)).encode()
    ds = client.post("/v1/datasets", files={"file": ("train.jsonl", content)}, headers=h).json()
    body = {
        "training_dataset_id": ds["id"],
        "provider": "local",
        "model": str(tiny_model_dir),
        "suffix": "exp",
        "method": {"type": "supervised", "hyperparameters": {"max_seq_length": 64, "n_epochs": 1}},
    }
    created = client.post("/v1/jobs", json=body, headers=h)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    early = client.post(f"/v1/jobs/{job_id}/exports", json={"format": "vllm"}, headers=h)
    job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=h).json())["status"] in
                   {"succeeded", "failed", "cancelled"} and j, timeout=180)  # fmt: skip
    assert job["status"] == "succeeded", job
    if early.status_code != 409:  # the job may have finished before the first request: then it simply built
        assert early.status_code in (200, 202), early.text
    else:
        assert early.json()["code"] == "export_unavailable"

    listed = client.get(f"/v1/jobs/{job_id}/exports", headers=h)
    assert listed.status_code == 200, listed.text
    assert {e["format"] for e in listed.json()["data"]} == {"vllm", "ollama", "merged", "gguf"}

    for fmt, kind in (("vllm", "vllm_adapter"), ("ollama", "ollama_bundle"), ("merged", "merged_model")):
        started = client.post(f"/v1/jobs/{job_id}/exports", json={"format": fmt}, headers=h)
        assert started.status_code in (200, 202), started.text
        out = wait_for(
            lambda f=fmt: (e := client.get(f"/v1/jobs/{job_id}/exports/{f}", headers=h).json())["status"]
            in {"ready", "failed"}
            and e,
            timeout=120,
        )
        assert out["status"] == "ready", out
        assert out["artifact"]["kind"] == kind and out["artifact"]["name"] == fmt and out["commands"]
        again = client.post(f"/v1/jobs/{job_id}/exports", json={"format": fmt}, headers=h)
        assert again.status_code == 200 and again.json()["artifact"] == out["artifact"]
        download = client.get(out["artifact"]["download_url"], headers=h)
        assert download.status_code == 200 and len(download.content) == out["artifact"]["size_bytes"]
        names = _extract(download.content, tmp_path / "dl")
        assert all(n == fmt or n.startswith(f"{fmt}/") for n in names)

    model_name = client.get(f"/v1/jobs/{job_id}/exports/vllm", headers=h).json()["model_name"]
    assert model_name.startswith("ft:") and model_name.endswith(f":exp:{job_id}")
    adapter_config = json.loads((tmp_path / "dl" / "vllm" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "vllm/base"
    ollama = client.get(f"/v1/jobs/{job_id}/exports/ollama", headers=h).json()
    assert ollama["model_name"] == ex.ollama_name(model_name)
    assert f"ollama create {ollama['model_name']} -f Modelfile" in " ".join(ollama["commands"])
    parse_modelfile((tmp_path / "dl" / "ollama" / "Modelfile").read_text())
    artifacts = {a["name"]: a["kind"] for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["data"]}
    assert artifacts == {"adapter": "adapter", "vllm": "vllm_adapter", "ollama": "ollama_bundle", "merged": "merged_model"}

    # Problems: a folder base has no GGUF export (and says why); another project's job is not found; an unknown
    # format is invalid.
    no_gguf = client.post(f"/v1/jobs/{job_id}/exports", json={"format": "gguf"}, headers=h)
    assert no_gguf.status_code == 409 and no_gguf.json()["code"] == "export_unavailable"
    assert "convert_hf_to_gguf" in no_gguf.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}/exports/gguf", headers=h).json()["status"] == "not_started"
    other = client.post(f"/v1/jobs/{job_id}/exports", json={"format": "vllm"}, headers=other_project["headers"])
    assert other.status_code == 404 and other.json()["code"] == "job_not_found"
    bad = client.post(f"/v1/jobs/{job_id}/exports", json={"format": "onnx"}, headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/v1/jobs/{job_id}/exports/onnx", headers=h).status_code == 422


# ----- GGUF: a fine-tune of a GGUF base, merged back into that file -----

ADAPTED_LAYERS = [0, 13, 29]


@pytest.fixture(scope="module")
def smollm2_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[ex.ExportTarget, Any, Path]:
    """A random (untrained) LoRA adapter on every linear layer of the packaged SmolLM2 GGUF, as the trainer saves one."""
    pytest.importorskip("gguf")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.providers.local.base_models import SMOLLM2_ALIAS, BaseModelError, convert_gguf, resolve_base_model

    try:
        source = resolve_base_model(SMOLLM2_ALIAS)
    except BaseModelError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("gguf-export")
    folder = convert_gguf(Path(source.location), root / "cache")[0]
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        # q and k (stored permuted in GGUF), v and an MLP projection, in a few layers: enough to see every mapping,
        # few enough that dequantising them stays cheap.
        target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
        layers_to_transform=ADAPTED_LAYERS,
        init_lora_weights=False,  # B is random too, so the adapter changes every adapted layer
    )
    model = get_peft_model(base, config)
    model.peft_config["default"].base_model_name_or_path = SMOLLM2_ALIAS
    model.save_pretrained(str(root / "output" / "adapter"))
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(root / "output" / "adapter"))
    model.eval()
    target = ex.ExportTarget(output_dir=root / "output", model_name=MODEL_NAME, cache_dir=root / "cache")
    return target, model, folder


@pytest.mark.timeout(600)  # dequantises a 135M model twice (the base for peft, the export for transformers)
def test_a_gguf_base_gets_a_gguf_with_the_adapter_merged_in(smollm2_adapter: tuple[ex.ExportTarget, Any, Path]) -> None:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, adapted, folder = smollm2_adapter
    status = ex.start_export(target, "gguf", archive="job-gguf.tar", wait=True)
    assert status.state == "ready", status
    # transformers reads GGUF on its own (its llama reader undoes llama.cpp's q/k layout): the file answers like the
    # adapter on the dequantised base the run trained on, within the F16 rounding of the adapted tensors.
    from_gguf = AutoModelForCausalLM.from_pretrained(str(status.path), gguf_file=ex.GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What colour is the sky?"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )["input_ids"]  # fmt: skip
    with adapted.disable_adapter(), torch.no_grad():
        base_logits = adapted(prompt).logits
    adapter_logits, adapter_tokens = _logits_and_greedy(adapted, prompt)
    gguf_logits, gguf_tokens = _logits_and_greedy(from_gguf, prompt)
    effect = (adapter_logits - base_logits).abs().max()
    error = (gguf_logits - adapter_logits).abs().max()
    assert effect > 1.0 and error < 0.02 * effect, (float(effect), float(error))
    assert gguf_tokens == adapter_tokens

    # Everything but the adapted tensors is the base file's, byte for byte: metadata, tokenizer, embeddings.
    base_reader = gguf.GGUFReader(str(resolve_base_model_location(target)))
    out_reader = gguf.GGUFReader(str(status.path / ex.GGUF_FILE))
    assert list(out_reader.fields["tokenizer.ggml.tokens"].contents()) == list(
        base_reader.fields["tokenizer.ggml.tokens"].contents()
    )
    base_tensors = {t.name: t for t in base_reader.tensors}
    changed = {t.name for t in out_reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.F16}
    assert changed == {f"blk.{i}.{m}.weight" for i in ADAPTED_LAYERS for m in ("attn_q", "attn_k", "attn_v", "ffn_down")}
    for t in out_reader.tensors:
        if t.name not in changed:
            assert t.tensor_type == base_tensors[t.name].tensor_type and bytes(t.data) == bytes(base_tensors[t.name].data)
    parsed = parse_modelfile((status.path / "Modelfile").read_text())
    assert parsed[0] == ("from", ["./model.gguf"]) and "adapter" not in {name for name, _ in parsed}


def resolve_base_model_location(target: ex.ExportTarget) -> Path:
    from service.providers.local.base_models import resolve_base_model

    return Path(resolve_base_model(target.base_spec()).location)


def test_other_bases_have_no_gguf_export_and_are_told_why(built: dict[str, Path], run_output: Path) -> None:
    target = ex.ExportTarget(output_dir=run_output, model_name=MODEL_NAME, cache_dir=run_output.parent / "cache")
    with pytest.raises(ex.ExportError, match="convert_hf_to_gguf"):
        ex.start_export(target, "gguf", archive="a.tar")
    assert ex.export_status(run_output, "gguf").state == "not_started"
