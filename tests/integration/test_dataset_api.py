"""Dataset intake through the API: inline and worker validation, limits, splits, conversions, leakage, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import wait_for


def _chat(i: int, label: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": f"ticket number {i} about topic {label} with words {i * 7} {i * 13}"},
                {"role": "assistant", "content": label},
            ]
        }
    )


def _dataset(n: int = 40) -> bytes:
    return ("\n".join(_chat(i, ["billing", "account", "bug"][i % 3]) for i in range(n)) + "\n").encode()


def _up(client, headers, content, name="d.jsonl", **fields):
    return client.post("/v1/datasets", files={"file": (name, content)}, data=fields, headers=headers)


def test_report_has_lines_fields_and_cost(client, project):
    bad = _dataset(12) + b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": ""}]}\n'
    r = _up(client, project["headers"], bad, model="gpt-4.1-mini-2025-04-14")
    assert r.status_code == 201
    ds = r.json()
    assert ds["status"] == "invalid" and ds["summary"]["error_count"] >= 1
    report = client.get(f"/v1/datasets/{ds['id']}/report", headers=project["headers"]).json()
    located = {(i["code"], i["line"], i["field"]) for i in report["issues"]}
    assert ("unknown_role", 13, "messages[0].role") in located
    good = _up(client, project["headers"], _dataset(12), model="gpt-4.1-mini-2025-04-14").json()
    assert good["status"] == "ready"
    assert good["summary"]["cost"]["n_epochs_auto"] == 8  # 100 // 12
    assert client.get("/v1/dataset-rules", headers=project["headers"]).json()["data"]


def test_large_upload_is_validated_by_the_worker(client, project, worker, settings, monkeypatch):
    client.app.state.settings = settings.model_copy(update={"inline_validation_bytes": 100})
    ds = _up(client, project["headers"], _dataset(30)).json()
    assert ds["status"] == "validating"
    done = wait_for(
        lambda: (
            (d := client.get(f"/v1/datasets/{ds['id']}", headers=project["headers"]).json())["status"] != "validating"
            and d
        )
    )
    assert done["status"] == "ready" and done["n_examples"] == 30
    types = [e["type"] for e in client.get("/v1/events", headers=project["headers"]).json()["data"]]
    assert "dataset.ready" in types


def test_upload_limit_is_413_and_keeps_nothing(client, project, settings):
    client.app.state.settings = settings.model_copy(update={"max_upload_bytes": 1000})
    r = _up(client, project["headers"], b"x" * 5000)
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"
    leftovers = [p for p in (settings.files_dir / "tmp").glob("*")] if (settings.files_dir / "tmp").exists() else []
    assert leftovers == []


def test_upload_needs_multipart_with_a_file(client, project):
    r = client.post("/v1/datasets", content=b"{}", headers=project["headers"] | {"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "multipart_required"
    r = client.post("/v1/datasets", data={"format": "chat"}, files={"x": ("a", b"1")}, headers=project["headers"])
    assert r.status_code == 422 and r.json()["code"] == "file_missing"


def test_split_is_frozen_and_linked(client, project):
    ds = _up(client, project["headers"], _dataset(60)).json()
    body = {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 7, "stratify_by": "assistant"}
    a = client.post(f"/v1/datasets/{ds['id']}/split", json=body, headers=project["headers"])
    assert a.status_code == 201, a.text
    splits = a.json()["splits"]
    assert {k: v["n_examples"] for k, v in splits.items()} == {"train": 48, "validation": 6, "test": 6}
    assert all(v["source_dataset_id"] == ds["id"] for v in splits.values())
    b = client.post(f"/v1/datasets/{ds['id']}/split", json=body, headers=project["headers"]).json()["splits"]
    assert {k: v["sha256"] for k, v in splits.items()} == {k: v["sha256"] for k, v in b.items()}
    leak = client.post(
        "/v1/datasets/leakage",
        json={"train_dataset_id": splits["train"]["id"], "test_dataset_id": splits["test"]["id"]},
        headers=project["headers"],
    ).json()
    assert leak["exact_test_lines"] == 0
    leak = client.post(
        "/v1/datasets/leakage",
        json={"train_dataset_id": ds["id"], "test_dataset_id": splits["test"]["id"]},
        headers=project["headers"],
    ).json()
    assert leak["exact_test_lines"] == 6


def test_prompt_completion_converts_to_chat(client, project):
    rows = "\n".join(json.dumps({"prompt": f"Q{i}\n\n###\n\n", "completion": f" A{i} END"}) for i in range(12)) + "\n"
    src = _up(client, project["headers"], rows.encode()).json()
    assert src["format"] == "prompt_completion"
    r = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["dataset"]["format"] == "chat" and out["dataset"]["source_dataset_id"] == src["id"]
    assert out["conversion"]["examples_written"] == 12


def test_csv_upload_and_conversion(client, project):
    csv = "question,answer\n" + "".join(f'"q {i}, with comma",a{i}\n' for i in range(12))
    cols = json.dumps({"user": "question", "assistant": "answer"})
    src = _up(client, project["headers"], csv.encode(), name="d.csv", format="csv", csv_columns=cols).json()
    assert src["format"] == "csv", src
    r = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert r.status_code == 201, r.text
    assert r.json()["dataset"]["n_examples"] == 12


def test_validate_cli_exit_codes(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(_dataset(12))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"messages": []}\n')
    ok = subprocess.run([sys.executable, "-m", "service.cli", "validate", str(good), "--json"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    ko = subprocess.run([sys.executable, "-m", "service.cli", "validate", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 1 and "INVALID" in ko.stdout
