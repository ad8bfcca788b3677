"""Dataset validation throughput and peak memory: our engine against OpenAI's data-prep cookbook, same run, same file.

    .venv/bin/python -m bench.dataset_validation            # 500 MB (generated once into bench/out/)
    .venv/bin/python -m bench.dataset_validation --mb 50    # quick run

The file is a generated, realistic chat dataset (deterministic for a seed): shared and unique system prompts,
one to six turns, multilingual text, code and markdown, and about 12% tool-calling examples with tool definitions.

The baseline follows the cookbook (``chat_finetuning_data_prep.ipynb``): ``json.loads`` per line, its format checks,
and ``len(tiktoken.encode(value))`` for every value of every message. It is made as strong as the cookbook allows
without changing its method: it streams the file instead of loading it into a list, counts each message once
(the cookbook encodes assistant contents a second time), uses the same offline tiktoken encodings as the engine,
and counts the values the cookbook cannot handle (tool calls, tool definitions) with the engine's documented rules,
so the two must agree on every count. With ``--encodings both`` (the default, what a report contains) both sides
count o200k_base and cl100k_base; ``--encodings one`` counts only the model's encoding.

Each side runs in its own subprocess. Peak memory: the process's own high-water mark (VmHWM), and for the engine,
which uses worker processes, the largest worker's and the peak over time of the whole process tree, both as summed
RSS (which counts memory shared between forked workers once per process) and as summed PSS (shared pages split
between the processes that share them: the tree's real footprint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
MODEL = "gpt-4.1-mini-2025-04-14"

# --- data generation --------------------------------------------------------------------------------------------------

_SEED_TEXT = {
    "en": "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly budget report. "
    "Please summarise the attached document and list three risks with their mitigations. Our service returns an "
    "error when the request body is larger than the configured limit, so clients should retry with smaller pages. "
    "In 1997 the company opened 42 stores across 7 countries and doubled its revenue within five years. "
    "Could you explain how photosynthesis converts light energy into chemical energy inside the chloroplast? "
    "Remember to hydrate, stretch before running, and increase your weekly distance by no more than ten percent.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso mientras el comité revisa el informe trimestral. "
    "Por favor, resume el documento adjunto y enumera tres riesgos con sus medidas de mitigación. ¿Podrías explicar "
    "cómo funciona la fotosíntesis en las plantas? Mañana lloverá en el norte y hará sol en el sur del país.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund, während der Ausschuss den Quartalsbericht prüft. "
    "Bitte fassen Sie das beigefügte Dokument zusammen und nennen Sie drei Risiken. Die Straßenbahn fährt heute "
    "wegen Bauarbeiten nur bis zur Haltestelle Hauptbahnhof; größere Verspätungen sind möglich.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux pendant que le comité examine le rapport. "
    "Pourriez-vous résumer le document ci-joint et énumérer trois risques? Il fera beau à Marseille, mais des "
    "averses sont prévues en Bretagne à partir de jeudi après-midi.",
    "ru": "Быстрая коричневая лиса прыгает через ленивую собаку, пока комитет изучает квартальный отчёт. "
    "Пожалуйста, кратко изложите приложенный документ и перечислите три риска. Завтра в Москве ожидается снег и "
    "сильный ветер, поэтому водителям стоит быть осторожнее на дорогах.",
    "zh": "敏捷的棕色狐狸跳过了懒狗，委员会正在审查季度预算报告。请总结附件中的文件并列出三个风险及其缓解措施。"
    "明天北京将有小雨，气温在十二到十八度之间，请出门带伞。机器学习模型需要大量高质量的数据进行训练。",
    "ja": "素早い茶色の狐が怠け者の犬を飛び越える間、委員会は四半期予算報告書を検討しています。添付の文書を要約し、"
    "三つのリスクとその対策を挙げてください。明日の東京は晴れのち曇りで、最高気温は二十三度の予想です。",
    "ar": "يقفز الثعلب البني السريع فوق الكلب الكسول بينما تراجع اللجنة تقرير الميزانية الفصلي. "
    "يرجى تلخيص المستند المرفق وذكر ثلاثة مخاطر مع طرق التخفيف منها. سيكون الطقس مشمسا غدا في القاهرة.",
    "hi": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है जबकि समिति तिमाही बजट रिपोर्ट की समीक्षा करती है। "
    "कृपया संलग्न दस्तावेज़ का सारांश दें और तीन जोखिमों की सूची बनाएं। कल दिल्ली में बारिश होने की संभावना है।",
    "ko": "빠른 갈색 여우가 게으른 개를 뛰어넘는 동안 위원회는 분기 예산 보고서를 검토합니다. 첨부된 문서를 요약하고 "
    "세 가지 위험과 완화 방안을 나열해 주세요. 내일 서울은 맑고 최고 기온은 이십오 도입니다.",
}
_CODE = [
    "```python\ndef fibonacci(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n```",
    "```sql\nSELECT customer_id, SUM(amount) AS total\nFROM orders\nWHERE created_at >= '2024-01-01'\n"
    "GROUP BY customer_id\nORDER BY total DESC\nLIMIT 10;\n```",
    "```js\nconst debounce = (fn, ms) => {\n  let t;\n  return (...args) => {\n    clearTimeout(t);\n"
    "    t = setTimeout(() => fn(...args), ms);\n  };\n};\n```",
    "| Metric | Q1 | Q2 |\n|---|---:|---:|\n| Revenue | 1,204 | 1,388 |\n| Churn | 3.1% | 2.7% |",
    "1. Preheat the oven to 180 °C.\n2. Mix flour, sugar & eggs.\n3. Bake for 25–30 min 🍰.",
]
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "description": "Search a customer's orders",
            "parameters": {
                "type": "object",
                "properties": {
                    "customer_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["open", "shipped", "returned"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                "required": ["customer_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount between currencies",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
                "required": ["amount", "from", "to"],
            },
        },
    },
]


class _TextSource:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = {lang: text.replace("。", " 。 ").split() for lang, text in _SEED_TEXT.items()}
        self.cjk = {lang: list(text) for lang, text in _SEED_TEXT.items() if lang in ("zh", "ja")}
        self.langs = list(_SEED_TEXT)
        self.weights = [40, 8, 8, 8, 7, 8, 6, 5, 5, 5]

    def sentence(self, lang: str) -> str:
        rng = self.rng
        if lang in self.cjk:
            chars = self.cjk[lang]
            start = rng.randrange(len(chars) - 40)
            return "".join(chars[start : start + rng.randint(8, 40)]) + "。"
        words = self.words[lang]
        picked = [words[rng.randrange(len(words))] for _ in range(rng.randint(5, 22))]
        if rng.random() < 0.15:
            picked.insert(rng.randrange(len(picked)), str(rng.randint(0, 99999)))
        return " ".join(picked).capitalize() + rng.choice([".", ".", ".", "?", "!", ":"])

    def text(self, target_chars: int) -> str:
        rng = self.rng
        lang = rng.choices(self.langs, self.weights)[0]
        parts: list[str] = []
        size = 0
        while size < target_chars:
            if rng.random() < 0.04:
                piece = rng.choice(_CODE)
            else:
                piece = self.sentence(lang)
            parts.append(piece)
            size += len(piece) + 1
            if rng.random() < 0.1:
                parts.append("\n\n")
        return " ".join(parts).strip()


def generate(path: Path, megabytes: float, seed: int = 7) -> None:
    """Write a deterministic chat JSONL of at least ``megabytes`` MB (1e6 bytes)."""
    rng = random.Random(seed)
    src = _TextSource(rng)
    shared_prompts = [src.text(rng.randint(60, 1500)) for _ in range(12)]
    target = int(megabytes * 1_000_000)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            r = rng.random()
            messages: list[dict[str, Any]] = []
            if r < 0.7:
                messages.append({"role": "system", "content": shared_prompts[min(11, int(rng.expovariate(0.5)))]})
            elif r < 0.9:
                messages.append({"role": "system", "content": src.text(rng.randint(40, 600))})
            example: dict[str, Any] = {"messages": messages}
            if rng.random() < 0.12:
                tools = rng.sample(_TOOLS, rng.randint(1, 3))
                example["tools"] = tools
                name = tools[0]["function"]["name"]
                call_id = f"call_{rng.getrandbits(64):016x}"
                args = {"city": rng.choice(["Paris, France", "東京", "São Paulo"]), "unit": "celsius"}
                messages.append({"role": "user", "content": src.text(rng.randint(20, 300))})
                messages.append(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
                            }
                        ],
                    }
                )
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"result": rng.random()})}
                )
                messages.append({"role": "assistant", "content": src.text(rng.randint(40, 800))})
            else:
                for turn in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])):
                    messages.append({"role": "user", "content": src.text(int(rng.lognormvariate(5.0, 0.9)) + 5)})
                    assistant: dict[str, Any] = {
                        "role": "assistant",
                        "content": src.text(int(rng.lognormvariate(6.0, 0.9)) + 5),
                    }
                    if turn and rng.random() < 0.2:
                        assistant["weight"] = rng.choice([0, 1])
                    messages.append(assistant)
            line = json.dumps(example, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
    tmp.replace(path)


# --- the cookbook baseline --------------------------------------------------------------------------------------------


def _baseline(path: Path, primary: str, other: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's data-prep cookbook, streamed: json per line, its checks, tiktoken per message value."""
    from service.tokens import get_encoding

    # ``encode`` as in the cookbook: it also refuses special-token text, a check the engine makes too.
    encoders = [get_encoding(primary).encode]  # type: ignore[arg-type]
    if other:
        encoders.append(get_encoding(other).encode)  # type: ignore[arg-type]

    def tokens(value: str) -> list[int]:
        return [len(encode(value)) for encode in encoders]

    def value_tokens(key: str, value: Any) -> list[int]:
        # The cookbook encodes string values; other values per the engine's documented rules.
        if isinstance(value, str):
            return tokens(value)
        if key == "content" and isinstance(value, list):
            out = [0] * len(encoders)
            for part in value:
                if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                    t = tokens(part.get("text") or part.get("refusal") or "")
                    out = [a + b for a, b in zip(out, t, strict=True)]
            return out
        return tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    format_errors: dict[str, int] = defaultdict(int)
    n_missing_system = n_missing_user = 0
    per_example: list[list[int]] = [[] for _ in encoders]
    role_tokens: dict[str, int] = defaultdict(int)
    n_messages = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            if not isinstance(ex, dict):
                format_errors["data_type"] += 1
                continue
            messages = ex.get("messages", None)
            if not messages:
                format_errors["missing_messages_list"] += 1
                continue
            for message in messages:
                if "role" not in message or ("content" not in message and "tool_calls" not in message):
                    format_errors["message_missing_key"] += 1
                if any(
                    k not in ("role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id")
                    for k in message
                ):
                    format_errors["message_unrecognized_key"] += 1
                if message.get("role", None) not in ("system", "user", "assistant", "tool", "function", "developer"):
                    format_errors["unrecognized_role"] += 1
                content = message.get("content", None)
                calls = message.get("function_call", None) or message.get("tool_calls", None)
                if (not content and not calls) or not isinstance(content, str | type(None)):
                    format_errors["missing_content"] += 1
            if not any(message.get("role", None) == "assistant" for message in messages):
                format_errors["example_missing_assistant_message"] += 1
            if not any(message["role"] == "system" for message in messages):
                n_missing_system += 1
            if not any(message["role"] == "user" for message in messages):
                n_missing_user += 1
            n_messages += len(messages)
            totals = [3] * len(encoders)  # reply primer
            for message in messages:
                msg = [3] * len(encoders)
                for key, value in message.items():
                    if key == "weight" or value is None:
                        continue
                    msg = [a + b for a, b in zip(msg, value_tokens(key, value), strict=True)]
                    if key == "name":
                        msg = [a + 1 for a in msg]
                role_tokens[message["role"]] += msg[0]
                totals = [a + b for a, b in zip(totals, msg, strict=True)]
            if "tools" in ex:
                t = value_tokens("tools", ex["tools"])
                role_tokens["tools"] += t[0]
                totals = [a + b for a, b in zip(totals, t, strict=True)]
            for i, total in enumerate(totals):
                per_example[i].append(total)
    n = len(per_example[0])
    from service.pricing import auto_epochs

    epochs = auto_epochs(n)
    return {
        "examples": n,
        "messages": n_messages,
        "format_errors": dict(format_errors),
        "missing_system": n_missing_system,
        "missing_user": n_missing_user,
        "tokens": [sum(p) for p in per_example],
        "per_example_sha256": [hashlib.sha256(json.dumps(sorted(p)).encode()).hexdigest() for p in per_example],
        "role_tokens": dict(sorted(role_tokens.items())),
        "over_limit": sum(t > limit for t in per_example[0]),
        "n_epochs": epochs,
        "billable_tokens": epochs * sum(min(limit, t) for t in per_example[0]),
    }


def _sorted_totals_sha(hist: dict[int, int]) -> str:
    totals: list[int] = []
    for value in sorted(hist):
        totals.extend([value] * hist[value])
    return hashlib.sha256(json.dumps(totals).encode()).hexdigest()


def _engine(path: Path, both: bool, workers: int | None, duplicates: bool) -> dict[str, Any]:
    from service.datasets.validation import ValidationOptions
    from service.datasets.validation.engine import validate_path_with_stats

    options = ValidationOptions(count_other_encoding=both, workers=workers, duplicates=duplicates)
    report, stats = validate_path_with_stats(path, model=MODEL, options=options)
    s = report.statistics
    shas = [_sorted_totals_sha(stats.tokens_per_example)]
    if both:
        shas.append(_sorted_totals_sha(stats.other_tokens_per_example))
    return {
        "examples": s.examples,
        "messages": s.messages,
        "issue_counts": {c.code: c.count for c in report.issue_counts},
        "missing_system": s.examples_missing_system,
        "missing_user": s.examples_missing_user,
        "tokens": [t.total_tokens for t in s.tokens_by_encoding.values()],
        "per_example_sha256": shas,
        "role_tokens": {role: d.total for role, d in s.tokens_per_role.items()},
        "over_limit": s.examples_over_limit,
        "n_epochs": report.cost.n_epochs if report.cost else None,
        "billable_tokens": report.cost.billable_tokens if report.cost else None,
        "valid": report.valid,
        "duplicates": report.duplicates.model_dump(include={"checked", "exact_groups", "near_pairs"}),
    }


# --- measurement ------------------------------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids = [pid]
    i = 0
    while i < len(pids):
        try:
            with open(f"/proc/{pids[i]}/task/{pids[i]}/children") as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
        i += 1
    return pids


class _TreeSampler(threading.Thread):
    """Peak over time of the summed RSS and PSS of a process and its descendants."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _tree(self.pid)
            self.peak_rss_kb = max(self.peak_rss_kb, sum(_status_kb(p, "VmRSS") for p in pids))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in pids))
            self.stop.wait(self.interval)


def _child_main(args: argparse.Namespace) -> None:
    """Runs one side in this (sub)process and prints its result and timings as JSON."""
    path = Path(args.data)
    t0 = time.perf_counter()
    if args.run == "baseline":
        result = _baseline(path, "o200k_base", "cl100k_base" if args.encodings == "both" else None, 65536)
    else:
        result = _engine(path, args.encodings == "both", args.workers, args.duplicates)
    seconds = time.perf_counter() - t0
    result["seconds"] = seconds
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_s"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    result["self_hwm_mb"] = _status_kb(os.getpid(), "VmHWM") / 1024
    result["max_child_hwm_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def _run_side(args: argparse.Namespace, side: str, data: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.dataset_validation", "--child", "--run", side, "--data", str(data)]
    cmd += ["--encodings", args.encodings, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    sampler = _TreeSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed with status {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    # Other processes competing for the CPUs slow a side down: print the load so figures can be judged.
    result["load_after"] = os.getloadavg()[0]
    result["tree_peak_rss_mb"] = sampler.peak_rss_kb / 1024
    result["tree_peak_pss_mb"] = sampler.peak_pss_kb / 1024
    return result


_COMPARED = (
    "examples",
    "messages",
    "missing_system",
    "missing_user",
    "tokens",
    "per_example_sha256",
    "role_tokens",
    "over_limit",
    "n_epochs",
    "billable_tokens",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=500.0, help="size of the generated dataset in MB (1e6 bytes)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", help="use this JSONL file instead of generating one")
    parser.add_argument("--keep", action="store_true", help="keep the generated file in bench/out/ for later runs")
    parser.add_argument("--encodings", choices=["both", "one"], default="both")
    parser.add_argument("--workers", type=int, default=None, help="engine processes (default: one per CPU)")
    parser.add_argument(
        "--engine",
        choices=["checks", "full", "both"],
        default="both",
        help="engine runs: 'checks' = every validation rule and count, no duplicate detection (the cookbook has "
        "none); 'full' = with exact and near-duplicate detection",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the sides this many times, keep each's best")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=["baseline", "engine"], help=argparse.SUPPRESS)
    parser.add_argument("--no-duplicates", dest="duplicates", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child_main(args)
        return

    cleanup: Path | None = None
    if args.data:
        data = Path(args.data)
    else:
        folder = OUT_DIR if args.keep else Path(tempfile.mkdtemp(prefix="bench-validation-"))
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"chat-{args.mb:g}MB-seed{args.seed}.jsonl"
        if not data.exists():
            t0 = time.perf_counter()
            generate(data, args.mb, args.seed)
            print(f"generated {data} in {time.perf_counter() - t0:.1f}s")
        if not args.keep:
            cleanup = folder
    try:
        _compare(args, data)
    finally:
        if cleanup is not None:
            for child in cleanup.iterdir():
                child.unlink()
            cleanup.rmdir()


def _compare(args: argparse.Namespace, data: Path) -> None:
    size_mb = data.stat().st_size / 1e6
    # Read the file once so that no side pays for the first read from disk.
    with open(data, "rb") as f:
        while f.read(16 << 20):
            pass
    print(f"file: {data} ({size_mb:,.1f} MB), {os.cpu_count()} CPUs, model {MODEL}, encodings: {args.encodings}")
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    sides: list[tuple[str, str, list[str]]] = []
    if not args.skip_baseline:
        sides.append(("baseline (cookbook)", "baseline", []))
    if args.engine in ("checks", "both"):
        sides.append(("engine (checks)", "engine", [*workers, "--no-duplicates"]))
    if args.engine in ("full", "both"):
        sides.append(("engine (full)", "engine", workers))
    # Runs alternate between the sides and each keeps its fastest, so load from other processes that comes and goes
    # does not favour whichever side happened to run in a quiet moment.
    results: dict[str, dict[str, Any]] = {}
    for attempt in range(args.repeat):
        for name, side, extra in sides:
            run = _run_side(args, side, data, extra)
            print(f"  run {attempt + 1}/{args.repeat} {name}: {run['seconds']:.1f}s, load {run['load_after']:.1f}")
            if name not in results or run["seconds"] < results[name]["seconds"]:
                results[name] = run
    print()
    print(
        f"{'':22}{'seconds':>9}{'MB/s':>9}{'CPU s':>8}{'self HWM':>10}{'worker HWM':>12}{'tree RSS':>10}"
        f"{'tree PSS':>10}"
    )
    for name, r in results.items():
        worker = f"{r['max_child_hwm_mb']:.0f} MB" if name.startswith("engine") else "-"
        print(
            f"{name:22}{r['seconds']:9.1f}{size_mb / r['seconds']:9.1f}{r['cpu_s']:8.1f}{r['self_hwm_mb']:7.0f} MB"
            f"{worker:>12}{r['tree_peak_rss_mb']:7.0f} MB{r['tree_peak_pss_mb']:7.0f} MB"
        )
    print("(CPU s: user + system time of the process and its workers; MB/s divides the file size by wall time)")
    loads = ", ".join(f"{name} {r['load_after']:.1f}" for name, r in results.items())
    print(f"1-minute load average after each run (other processes; {os.cpu_count()} CPUs): {loads}")
    base = results.get("baseline (cookbook)")
    failed = False
    for name, r in results.items():
        if not name.startswith("engine"):
            continue
        print(f"{name}: {r['examples']:,} examples, tokens {r['tokens']}, duplicates {r['duplicates']}")
        print(f"  issues: {r['issue_counts']}")
        if base is None:
            continue
        print(
            f"  speed-up: {base['seconds'] / r['seconds']:.2f}x the cookbook baseline's throughput "
            f"({base['cpu_s'] / r['cpu_s']:.2f}x less CPU time)"
        )
        mismatches = [k for k in _COMPARED if base[k] != r[k]]
        for key in mismatches:
            print(f"  MISMATCH {key}: baseline {base[key]} engine {r[key]}")
            failed = True
        if not mismatches:
            print(f"  counts identical to the baseline: {', '.join(_COMPARED)}")
    if base is not None:
        print(f"baseline format errors (cookbook categories): {base['format_errors'] or 'none'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
